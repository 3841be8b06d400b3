"""The rules every path that loads a model shares, checked in one place before any work: the longest input
a model takes, the device and dtype names, and whether a tokenizer belongs to a model. Torch-free at
import. One call's embedding options are minibert/engine/options.py."""

from __future__ import annotations

from minibert.config import BertConfig

DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")  # what a model computes in for use (float64: checking only)
NUMPY_MAX_TEXTS = 16  # backend "auto" (minibert/numpy_encoder.py): numpy for up to this many texts


def max_length_for(tokenizer, config: BertConfig, max_length: int | None = None) -> int:
    """The longest input, in tokens, that an encoder feeds `config`'s model: `max_length` where one is given
    (a call's, or a sentence-transformers folder's max_seq_length), checked against the position table;
    otherwise the tokenizer's model_max_length, cut to the position table (config.max_input_length)."""
    if max_length is None:
        return min(tokenizer.model_max_length, config.max_input_length)
    check_max_length(max_length, config)
    return max_length


def check_max_length(value, config: BertConfig, name: str = "max_length") -> None:
    limit = config.max_input_length
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= limit:
        where = "max_position_embeddings" if limit == config.max_position_embeddings else "longest input"
        raise ValueError(
            f"{name} must be an integer from 2 (room for [CLS] and [SEP]) to the model's {where} {limit}, got {value!r}"
        )


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


def check_quantize(quantize, device, dtype) -> None:
    """quantize is None or "int8", and int8 runs on CPU in float32 (`device` and `dtype` as torch objects)."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if quantize and (device.type != "cpu" or str(dtype) != "torch.float32"):
        raise ValueError(f"quantize='int8' runs on CPU in float32, not on device {str(device)!r} in {dtype}")
