"""Sentence embeddings: texts in, one vector per text out, pooled from the encoder's last layer."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from contextlib import ExitStack, contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from minibert.formats.hub import default_model, resolve
from minibert.formats.int8 import is_int8_folder
from minibert.formats.sentence_transformers import read_sentence_transformers_settings
from minibert.model import BertModel
from minibert.settings import POOLINGS, EncoderSettings, as_device, as_dtype, max_length_for, warn_truncated
from minibert.tokenizer import Tokenizer, as_text_list


class Encoder(EncoderSettings):
    """A BertModel, its tokenizer, and how to turn token vectors into one vector per text.

    >>> encoder = Encoder.from_pretrained()          # all-MiniLM-L6-v2
    >>> vectors = encoder.encode(["a first text", "a second text"])   # (2, 384) float32
    >>> similarity(vectors, vectors)
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: Tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        lowercase: bool = False,
        max_batch_tokens: int | None = 2048,
        fast: bool = True,
    ):
        super().__init__(
            model.config,
            tokenizer,
            model.pooler is not None,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            lowercase=lowercase,
        )
        _warn_if_slow_bfloat16(model)
        global _encoders_made
        _encoders_made = True
        # oneDNN linear layers with the GELU fused, and fused layers, on CPU where they pay (see
        # minibert/fast/onednn.py); the same weights
        from minibert.fast.onednn import fuse_linear_layers, fusion_pays

        if fast and fusion_pays(model):
            fuse_linear_layers(model)
        self.fast = fast  # also: batches side by side on CPU cores, in encode
        self.model = model.eval()
        # A batch of long texts holds fewer than batch_size of them, at most this many padded tokens: less
        # padding in the long tail, and activations that stay in the CPU's cache. None: no such limit.
        self.max_batch_tokens = max_batch_tokens

    @classmethod
    def from_pretrained(
        cls,
        name_or_path=None,
        *,
        device=None,
        dtype=None,
        revision=None,
        local_files_only=False,
        fast: bool = True,
        quantize: str | None = None,
        lowercase: bool | None = None,
        backend: str = "torch",
    ) -> Encoder:
        """Load a model folder or Hub id; None loads the default, all-MiniLM-L6-v2.

        `fast=True`, on CPU: the linear layers run through oneDNN with the GELU fused where that is faster
        (AVX-512; minibert/fast/onednn.py, minibert/fast/cpu.py), and batches run side by side, one per core; the same
        weights, results equal to the plain path up to float rounding. `fast=False` keeps the plain model
        and one batch at a time.

        `quantize="int8"`, CPU and float32 only: the encoder layers' linear layers compute in 8 bits
        (minibert/fast/quantize.py), calibrated at load time on texts made from the vocabulary (about a
        second for all-MiniLM-L6-v2). Faster and lossy: README's Speed section gives both figures.

        A folder saved by sentence-transformers (modules.json, 1_Pooling/config.json,
        sentence_bert_config.json) sets the pooling, normalisation and maximum length its vectors were
        trained with. Without that metadata: mean pooling over real tokens, not normalised.

        `lowercase` overrides the tokenizer's lower-casing; a Google folder with a bare vocab.txt whose
        name does not say cased or uncased needs it.

        `backend="numpy"` returns a minibert.numpy_encoder.NumpyEncoder instead: the same interface and
        vectors (within 1e-5) from the numpy specification, for a few texts on CPU in float32.
        """
        if backend == "numpy":
            from minibert.numpy_encoder import NumpyEncoder

            if as_device(device).type != "cpu" or as_dtype(dtype) != torch.float32 or quantize is not None:
                raise ValueError(
                    "backend='numpy' computes on CPU in float32 without quantization; got "
                    f"device={device!r}, dtype={dtype!r}, quantize={quantize!r}"
                )
            return NumpyEncoder.from_pretrained(
                name_or_path, revision=revision, local_files_only=local_files_only, lowercase=lowercase
            )
        if backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")

        device, dtype = as_device(device), as_dtype(dtype)
        if name_or_path is None:
            folder = default_model()
        else:
            folder = resolve(name_or_path, revision=revision, local_files_only=local_files_only)
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        if quantize and (device.type != "cpu" or dtype != torch.float32):
            raise ValueError(f"quantize='int8' runs on CPU in float32, not on device {str(device)!r} in {dtype}")
        settings = read_sentence_transformers_settings(folder)
        tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
        if is_int8_folder(folder):  # an int8 folder Encoder.save_pretrained wrote: no calibration
            from minibert.fast.quantize import load_int8_model

            if device.type != "cpu" or dtype != torch.float32:
                raise ValueError(
                    f"{folder} holds an int8 model, which runs on CPU in float32, not on device "
                    f"{str(device)!r} in {dtype}"
                )
            model = load_int8_model(folder)
        else:
            model = BertModel.from_pretrained(folder, device=device, dtype=dtype)
            if quantize:
                from minibert.fast.quantize import calibration_batches, quantize_int8

                max_length = max_length_for(tokenizer, model.config, settings.get("max_length"))
                quantize_int8(model, calibration_batches(tokenizer, max_length, settings.get("lowercase", False)))
        encoder = cls(model, tokenizer, fast=fast, **settings)
        encoder.source = folder  # where save_pretrained finds the sentence-transformers metadata to keep
        return encoder

    def save_pretrained(self, directory, force: bool = False) -> None:
        """Write the encoder as a model folder: config.json, model.safetensors, the tokenizer files and the
        sentence-transformers metadata it was loaded with (pooling, normalisation, length). An int8 encoder
        is written as int8 weights with their scales and smoothing factors, and a config entry saying so:
        from_pretrained loads it without calibrating, and gives the same vectors on the same machine.
        Built beside `directory` and moved into place whole; a non-empty `directory` needs force=True."""
        from minibert.fast.quantize import Int8Linear, save_int8_model
        from minibert.formats.atomic import atomic_folder, check_not_source
        from minibert.formats.checkpoint import save_model
        from minibert.formats.sentence_transformers import copy_sentence_transformers_files

        source = getattr(self, "source", None)
        if source is not None:  # never over the folder the encoder was loaded from: force would delete it
            check_not_source(directory, source, "the model folder it was loaded from", folder=True)
        quantized = any(isinstance(m, Int8Linear) for m in self.model.modules())
        with atomic_folder(directory, force=force) as tmp:
            if quantized:
                save_int8_model(self.model, tmp)
            else:
                save_model(self.model, tmp)
            self.tokenizer.save(tmp)
            if source is not None:
                copy_sentence_transformers_files(source, tmp)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(
        self,
        texts,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        show_progress: bool | None = None,
        convert_to: str = "numpy",
    ):
        """Embed a string, giving (H,), or a list of strings, giving (N, H), float32, rows in input order.

        Texts are sorted by token count and batched, so each batch pads little, then put back in order.
        Texts longer than `max_length` tokens are truncated, with one warning saying how many.
        """
        single = isinstance(texts, str)
        texts = as_text_list(texts, "texts")
        out, stats = self._encode(
            texts,
            pooling=pooling,
            normalize=normalize,
            batch_size=batch_size,
            max_length=max_length,
            show_progress=show_progress,
            convert_to=convert_to,
        )
        warn_truncated(stats["truncated"], len(texts), stats["max_length"])
        return out[0] if single else out

    def _encode(
        self,
        texts: list[str],
        *,
        pooling=None,
        normalize=None,
        batch_size=32,
        max_length=None,
        show_progress=None,
        convert_to="numpy",
    ):
        """encode's work on a list of strings: the vectors, and {tokens, truncated, max_length}."""
        pooling, normalize, max_length = self.options(pooling, normalize, max_length, batch_size)
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")

        encodings, truncated = self.tokenize(texts, max_length)
        stats = {
            "tokens": sum(len(e.ids) for e in encodings),
            "max_length": max_length,
            "truncated": truncated,
        }
        out = self.embed_encodings(
            encodings, pooling=pooling, normalize=normalize, batch_size=batch_size, show_progress=show_progress
        )
        return (out.cpu().numpy() if convert_to == "numpy" else out), stats

    def embed_encodings(self, encodings, *, pooling: str, normalize: bool, batch_size: int = 32, show_progress=False):
        """The (N, H) float32 tensor of vectors for inputs already tokenized: anything with `.ids` and
        `.type_ids` (a tokenizers.Encoding), each within the model's length, with settings already checked
        (`options`). Batched by length under max_batch_tokens, batches side by side on CPU cores."""
        _check_not_forked()
        batches = length_sorted_batches([len(e.ids) for e in encodings], batch_size, self.max_batch_tokens)
        if show_progress is None:
            show_progress = len(batches) > 4 and sys.stderr.isatty()

        device = self.device

        def embed(rows):
            with torch.inference_mode():
                batch = self.tokenizer.collate([encodings[i] for i in rows])
                ids, types, mask = (batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask"))
                # Texts of one length need no padding mask, and attention runs faster without one.
                output = self.model(ids, None if bool(mask.all()) else mask, types, output_pooler=pooling == "pooler")
                vectors = pool(output.last_hidden_state, mask, pooling, output.pooler_output)
                return rows, F.normalize(vectors, p=2, dim=1) if normalize else vectors

        out = torch.empty(len(encodings), self.dim, dtype=torch.float32, device=device)
        # On CPU, one batch per core, each on a single thread: this beats splitting every operation across
        # the cores (10% on the benchmark corpus with 2 cores), and gives the same numbers.
        parallel = self.fast and device.type == "cpu" and len(batches) > 1
        with _cpu_cores(parallel) as cores, ExitStack() as stack:
            results = map(embed, batches)
            if cores > 1:
                from concurrent.futures import ThreadPoolExecutor

                workers = ThreadPoolExecutor(cores, initializer=torch.set_num_threads, initargs=(1,))
                results = stack.enter_context(workers).map(embed, batches)
            for rows, vectors in _progress(results, show_progress, len(encodings)):
                out[torch.tensor(rows, device=device)] = vectors
        return out


# After fork(), torch's OpenMP thread pool is gone from the child, and the child's first parallel
# operation waits for it forever (plain torch does the same). An Encoder made before a fork knows this.
_encoders_made = False
_forked_after_load = False


def _after_fork_in_child():
    global _forked_after_load
    _forked_after_load = _encoders_made


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_not_forked():
    if _forked_after_load and torch.get_num_threads() > 1:
        raise RuntimeError(
            "this process is a fork() of one that had already loaded a minibert model, and torch's thread pool "
            "does not survive fork(): computing here would hang. Start worker processes with multiprocessing's "
            "'spawn' or 'forkserver' method (multiprocessing.get_context('spawn')), or call "
            "torch.set_num_threads(1) in the child first"
        )


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextmanager
def _cpu_cores(parallel: bool = True):
    """The number of worker threads for one `encode` (1 when not `parallel`): torch's thread count as it
    was before any concurrent `encode` began. A worker's torch.set_num_threads(1) also sets the count
    that threads started later begin with, so each caller puts the saved count back on its way out."""
    global _threads_users, _threads_saved
    if not parallel:
        yield 1
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
        _threads_users += 1
        cores = _threads_saved
    try:
        yield cores
    finally:
        with _threads_lock:
            _threads_users -= 1
            torch.set_num_threads(cores)


def length_sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, so padding stays small: at most
    `batch_size` texts, and at most `max_tokens` padded tokens where that allows more than one text."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, start = [], 0
    while start < len(order):
        size = batch_size
        if max_tokens:
            size = max(1, min(batch_size, max_tokens // lengths[order[start]]))
        batches.append(order[start : start + size])
        start += size
    return batches


def pool(last_hidden_state, attention_mask, pooling: str, pooler_output=None) -> torch.Tensor:
    """(B, L, H) token vectors -> (B, H) text vectors, in float32, ignoring padding."""
    h = last_hidden_state.float()
    mask = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, L, 1)
    if pooling == "mean":
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == "mean_sqrt_len":
        return (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9).sqrt()
    if pooling == "max":
        return h.masked_fill(mask == 0, torch.finfo(h.dtype).min).amax(1)
    if pooling == "cls":
        return h[:, 0]
    if pooling == "pooler":
        return pooler_output.float()
    raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")


def similarity(a, b=None):
    """Cosine similarity of every row of `a` with every row of `b` (default: `a` itself).

    Takes numpy arrays or torch tensors of shape (N, H) or (H,); returns (N, M) of the same kind.
    """
    if b is None:
        b = a
    as_torch = isinstance(a, torch.Tensor)
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a, dtype=torch.float32)
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b, dtype=torch.float32).to(a.device)
    a, b = torch.atleast_2d(a), torch.atleast_2d(b)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"similarity needs (N, H) and (M, H) vectors, got {tuple(a.shape)} and {tuple(b.shape)}")
    scores = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # (N, M)
    return scores if as_torch else scores.cpu().numpy()


_warned_bfloat16 = False


def _warn_if_slow_bfloat16(model):
    global _warned_bfloat16
    from minibert.fast.cpu import features

    param = next(model.parameters())
    if param.dtype == torch.bfloat16 and param.device.type == "cpu" and not features().native_bf16:
        if not _warned_bfloat16:
            _warned_bfloat16 = True
            warnings.warn(
                f"this CPU ({features().describe()}) has no bfloat16 dot-product instructions "
                "(AVX512_BF16 or AMX): bfloat16 computes correctly here but is no faster than "
                "float32, and often slower",
                stacklevel=3,
            )


def _progress(results, enabled: bool, total: int):
    """The batches' (rows, vectors) as they come, with one progress bar counting texts where `enabled`."""
    if not enabled:
        yield from results
        return
    from tqdm.auto import tqdm

    with tqdm(desc="Encoding", unit="text", total=total, file=sys.stderr) as bar:
        for rows, vectors in results:
            yield rows, vectors
            bar.update(len(rows))
