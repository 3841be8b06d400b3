"""An encoder's settings, resolved and checked in one place before any work: pooling, normalisation, the
longest input, batch size, device and dtype, and whether a tokenizer belongs to a model. Torch-free at
import, shared by the torch Encoder, the numpy one, the corpus paths and the CLI."""

from __future__ import annotations

import warnings

from minibert.config import BertConfig
from minibert.fast.heap import release_free_memory

POOLINGS = ("mean", "cls", "pooler", "max", "mean_sqrt_len")
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
NUMPY_MAX_TEXTS = 16  # backend "auto" (minibert/numpy_encoder.py): numpy for up to this many texts


def max_length_for(tokenizer, config: BertConfig, max_length: int | None = None) -> int:
    """The longest input, in tokens, that an encoder feeds `config`'s model: `max_length` where one is given
    (a call's, or a sentence-transformers folder's max_seq_length), checked against the position table;
    otherwise the tokenizer's model_max_length, cut to the position table (max_position_embeddings)."""
    if max_length is None:
        return min(tokenizer.model_max_length, config.max_position_embeddings)
    check_max_length(max_length, config)
    return max_length


class EncoderSettings:
    """What the torch Encoder and the numpy one share: the settings a model folder (or the caller) gives
    them, checked at creation, how one call's options resolve against those defaults, and encode_stream
    over each one's `_encode(texts, **options) -> (vectors, {tokens, truncated, max_length})`."""

    def __init__(
        self,
        config: BertConfig,
        tokenizer,
        has_pooler: bool,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        lowercase: bool = False,
    ):
        check_pooling(pooling, has_pooler)
        check_vocabulary(tokenizer, config)
        if max_length is not None:
            check_max_length(max_length, config)
        self.config, self.tokenizer, self.has_pooler = config, tokenizer, has_pooler
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length  # None: the tokenizer's model maximum (max_length_for)
        self.lowercase = lowercase  # sentence-transformers' do_lower_case: lower the text before tokenizing

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def options(self, pooling=None, normalize=None, max_length=None, batch_size=32) -> tuple[str, bool, int]:
        """One call's (pooling, normalize, max_length): each given value checked, each None the default."""
        pooling = self.pooling if pooling is None else pooling
        check_pooling(pooling, self.has_pooler)
        check_batch_size(batch_size)
        normalize = self.normalize if normalize is None else normalize
        max_length = max_length_for(self.tokenizer, self.config, self.max_length if max_length is None else max_length)
        return pooling, normalize, max_length

    def tokenize(self, texts: list[str], max_length: int, truncation: bool = True) -> tuple[list, int]:
        """The tokenizer's encodings of `texts` (lowered first where the model asks), and how many were cut
        to `max_length` (none without `truncation`: the caller then sees each encoding's whole length)."""
        if self.lowercase:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode(texts, max_length=max_length, truncation=truncation)
        return encodings, sum(1 for e in encodings if e.overflowing)

    def encode_stream(self, texts, *, chunk_size: int = 4096, stats: dict | None = None, **options):
        """Embed any iterable of strings (a generator over a file, say) chunk by chunk: yields
        (start_index, vectors) in input order, vectors (n, H) for the texts from start_index on. Memory
        stays bounded by `chunk_size`, not by the corpus; texts are length-sorted within a chunk, and the
        vectors equal `encode`'s. `options` are encode's; `stats`, if given, gets running totals of
        texts, tokens and truncated texts. One truncation warning comes at the end. Between chunks the
        C heap's free pages go back to the OS (minibert/fast/heap.py), so resident memory does not creep."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if isinstance(texts, str):
            raise TypeError("encode_stream takes an iterable of strings; for one text use encode")
        stats = {} if stats is None else stats
        stats.update(texts=0, tokens=0, truncated=0)
        chunk, start, max_length = [], 0, None
        iterator = iter(texts)
        while True:
            for text in iterator:
                if not isinstance(text, str):
                    raise TypeError(f"texts[{start + len(chunk)}] is {type(text).__name__} {text!r:.40}, not a string")
                chunk.append(text)
                if len(chunk) == chunk_size:
                    break
            if not chunk:
                break
            vectors, chunk_stats = self._encode(chunk, **options)
            max_length = chunk_stats["max_length"]
            stats["texts"] += len(chunk)
            stats["tokens"] += chunk_stats["tokens"]
            stats["truncated"] += chunk_stats["truncated"]
            release_free_memory()  # otherwise the heap fragments and resident memory creeps chunk by chunk
            yield start, vectors
            start += len(chunk)
            chunk = []
        warn_truncated(stats["truncated"], stats["texts"], max_length)


def warn_truncated(truncated: int, total: int, max_length: int, stacklevel: int = 3) -> None:
    """The one warning a call gives when it truncated texts."""
    if truncated:
        warnings.warn(
            f"{truncated} of {total} texts were longer than {max_length} tokens and were truncated",
            stacklevel=stacklevel,
        )


def check_pooling(pooling, has_pooler: bool) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
    if pooling == "pooler" and not has_pooler:
        raise ValueError("pooling 'pooler' needs pooler weights, and this checkpoint has none")


def check_max_length(value, config: BertConfig, name: str = "max_length") -> None:
    limit = config.max_position_embeddings
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= limit:
        raise ValueError(
            f"{name} must be an integer from 2 (room for [CLS] and [SEP]) to the model's "
            f"max_position_embeddings {limit}, got {value!r}"
        )


def check_batch_size(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"batch_size must be a positive integer, got {value!r}")


def check_vocabulary(tokenizer, config: BertConfig) -> None:
    """Every id the tokenizer can produce must be a row of the embedding table: checked at load, instead
    of failing on the first text that uses the id."""
    top = max(tokenizer.backend.get_vocab(with_added_tokens=True).values(), default=-1)
    if top >= config.vocab_size:
        token = tokenizer.backend.id_to_token(top)
        raise ValueError(
            f"the tokenizer maps {token!r} to id {top}, but the model's vocab_size is "
            f"{config.vocab_size}: the tokenizer does not belong to this model"
        )


def as_device(device):
    """A torch.device, cpu unless asked otherwise; a device this torch cannot use is a ValueError naming it."""
    import torch

    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, or cuda where torch has a GPU") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise ValueError(f"device {str(device)!r} is not available: {why}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} is not available: {torch.cuda.device_count()} GPU(s) visible")
    if device.type not in ("cpu", "cuda") and device.type != "mps":
        raise ValueError(f"device {str(device)!r} is not supported; use cpu or cuda")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available on this machine")
    return device


def as_dtype(dtype):
    """A torch dtype, float32 unless asked otherwise; accepts a torch dtype or its name ("bfloat16")."""
    import torch

    if dtype is None:
        return torch.float32
    given = dtype
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or str(dtype).removeprefix("torch.") not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {given!r}")
    return dtype
