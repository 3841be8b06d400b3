"""Sentence embeddings: texts in, one vector per text out, pooled from the encoder's last layer. `Encoder` is a
BertModel behind the engine (minibert/engine/), which owns the path from texts to vectors."""

from __future__ import annotations

import numpy as np
import torch

from minibert.engine.core import Engine
from minibert.engine.pooling import l2_normalize
from minibert.engine.text_encoder import TextEncoder
from minibert.engine.torch_backend import TorchBackend
from minibert.formats.hub import default_model, resolve
from minibert.formats.int8 import is_int8_folder
from minibert.formats.sentence_transformers import read_sentence_transformers_settings
from minibert.model import BertModel
from minibert.settings import as_device, as_dtype, check_quantize, max_length_for
from minibert.tokenizer import Tokenizer


class Encoder(TextEncoder):
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
        source=None,
        prompts: dict | None = None,
        default_prompt_name: str | None = None,
        head=None,
    ):
        # oneDNN linear layers with the GELU fused, and fused layers, on CPU where they pay (see
        # minibert/fast/onednn.py); the same weights
        from minibert.fast.onednn import fuse_linear_layers, fusion_pays

        if fast and fusion_pays(model):
            fuse_linear_layers(model)
        self.fast = fast  # also: batches side by side on CPU cores, in encode
        self.model = model.eval()
        self.source = source  # the folder it was loaded from, whose sentence-transformers files save_pretrained keeps
        # A batch of long texts holds fewer than batch_size of them, at most max_batch_tokens padded tokens:
        # less padding in the long tail, and activations that stay in the CPU's cache. None: no such limit.
        engine = Engine(
            TorchBackend(self.model, fast, head),
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            lowercase=lowercase,
            max_batch_tokens=max_batch_tokens,
            prompt=(prompts or {}).get(default_prompt_name, ""),
        )
        super().__init__(engine, prompts, default_prompt_name)

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
        max_length: int | None = None,
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

        `max_length` overrides the folder's longest input (tokens). `lowercase` overrides the tokenizer's
        lower-casing; a Google folder with a bare vocab.txt whose name does not say cased or uncased needs it.

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
                name_or_path,
                revision=revision,
                local_files_only=local_files_only,
                lowercase=lowercase,
                max_length=max_length,
            )
        if backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")

        device, dtype = as_device(device), as_dtype(dtype)
        if name_or_path is None:
            folder = default_model()
        else:
            folder = resolve(name_or_path, revision=revision, local_files_only=local_files_only)
        check_quantize(quantize, device, dtype)
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
                from minibert.fast.quantize import quantize_calibrated

                length = max_length_for(tokenizer, model.config, settings.get("max_length"))
                quantize_calibrated(model, tokenizer, length, settings.get("lowercase", False))
        if max_length is not None:
            settings["max_length"] = max_length
        return cls(model, tokenizer, fast=fast, source=folder, **settings)

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

        source = self.source
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
    scores = l2_normalize(torch, a) @ l2_normalize(torch, b).T  # (N, M)
    return scores if as_torch else scores.cpu().numpy()
