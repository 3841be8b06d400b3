"""Golden activations: every step of a forward pass in one safetensors file, readable without minibert.

A dump holds, as tensors:
    inputs.input_ids, inputs.token_type_ids, inputs.attention_mask      (B, L) int64
    every step of minibert.tools.trace.trace, under its step name            float, the model's dtype
    heads.mlm.logits (B, L, V) and/or heads.nsp.logits (B, 2)            when asked for
and, in the safetensors header's metadata (strings; JSON where marked):
    format "minibert-activations/1", steps (JSON: the tensor names in computation order), wordpieces
    (JSON: each row's real tokens), texts and pairs (JSON), config (JSON), minibert_version,
    torch_version, dtype, device.

Padded positions are 0 in every step tensor: rows of padded tokens and, in (B, N, L, L) attention
tensors, padded query rows and padded key columns. inputs.attention_mask says which they are.
docs/activations.md says where each tensor is taken.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import minibert
from minibert.tools.steps import real_positions
from minibert.tools.trace import trace

FORMAT = "minibert-activations/1"


def zero_padding(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`t` with its padded positions set to 0 (minibert.tools.steps.real_positions says which)."""
    keep = torch.from_numpy(real_positions(t.shape, mask.cpu().numpy())).to(t.device)
    return t.masked_fill(~keep, 0)


def activations(model, batch: dict, head_model=None, heads=()) -> dict[str, torch.Tensor]:
    """Inputs, every step and the asked-for head logits of one batch, padding zeroed, in order.
    `model` is a BertModel; `head_model` a BertForMaskedLM / BertForPreTraining / ... holding it."""
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(batch["input_ids"])
    token_types = batch.get("token_type_ids")
    if token_types is None:
        token_types = torch.zeros_like(batch["input_ids"])
    out = {"inputs.input_ids": batch["input_ids"], "inputs.token_type_ids": token_types, "inputs.attention_mask": mask}
    for name, t in trace(model, {**batch, "attention_mask": mask, "token_type_ids": token_types}).items():
        out[name] = zero_padding(t, mask)
    if heads:
        with torch.no_grad():
            result = head_model(batch["input_ids"], attention_mask=mask, token_type_ids=token_types)
        logits = {
            "mlm": getattr(result, "prediction_logits", getattr(result, "logits", None)),
            "nsp": getattr(result, "seq_relationship_logits", getattr(result, "logits", None)),
        }
        for head in heads:
            out[f"heads.{head}.logits"] = zero_padding(logits[head], mask)
    return out


def dump_texts(model, texts: list[str], pairs=None, *, dtype="float32", heads=(), lowercase=None) -> tuple:
    """(tensors, metadata) of a dump of `texts` (and their second segments `pairs`) on the model folder or Hub
    id `model` (default: all-MiniLM-L6-v2), with the head logits asked for: what `minibert dump` writes."""
    import warnings

    from minibert.formats.hub import default_model
    from minibert.settings import max_length_for
    from minibert.tokenizer import Tokenizer

    folder = model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
    if heads:
        from minibert.heads import BertForPreTraining

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # newly initialised head weights are refused just below
            head_model = BertForPreTraining.from_pretrained(folder, dtype=dtype)
        missing = [n for n in head_model.newly_initialized if n.startswith("cls.")]
        if missing:
            raise ValueError(f"{folder} has no pretraining head weights ({missing[0]}, ...) for --head")
        bert = head_model.bert
    else:
        from minibert.model import BertModel

        bert, head_model = BertModel.from_pretrained(folder, dtype=dtype, warn_no_pooler=False), None
    batch = tokenizer(texts, pairs, max_length=max_length_for(tokenizer, bert.config))
    tensors = activations(bert, batch, head_model, heads)
    keep = batch["attention_mask"].bool()
    wordpieces = [tokenizer.convert_ids_to_tokens(ids[k]) for ids, k in zip(batch["input_ids"], keep)]
    metadata = {
        "texts": texts,
        "pairs": pairs,
        "wordpieces": wordpieces,
        "config": bert.config.to_dict(),
        "model": str(folder),
        "dtype": dtype,
        "device": "cpu",
    }
    return tensors, metadata


def write_dump(path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    """One safetensors file, written atomically; metadata values that are not strings become JSON."""
    from safetensors.torch import save_file

    from minibert.formats.atomic import atomic_path

    header = {
        "format": FORMAT,
        "steps": json.dumps(list(tensors)),
        "minibert_version": minibert.__version__,
        "torch_version": torch.__version__,
    }
    header.update({k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in metadata.items()})
    # bfloat16 has no numpy dtype, so such a dump stores float32 (exactly the same values); `dtype` says it
    tensors = {
        k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().contiguous() for k, v in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=header)


def read_dump(path) -> tuple[dict, dict]:
    """(tensors as numpy arrays in computation order, metadata) from a dump file, or from a folder of
    `<step name>.npy` files (what a port may find easier to write; its order is the reference's).
    bfloat16 tensors, which numpy has no type for, are read as the float32 numbers they are."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise FileNotFoundError(f"{path} holds no .npy files named by step (e.g. layers.0.attention.probs.npy)")
        return {f.name.removesuffix(".npy"): _load_npy(f) for f in files}, {}
    metadata, tensors = read_safetensors_numpy(path)
    try:
        order = json.loads(metadata.get("steps", "[]")) or list(tensors)
        if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
            raise ValueError("not a list of names")
    except ValueError as e:  # json.JSONDecodeError is one
        raise ValueError(f"{path}: metadata 'steps' is not a JSON list of tensor names ({e})") from None
    return {k: tensors[k] for k in order if k in tensors} | tensors, metadata


def _load_npy(path: Path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # numpy's own advice would be to unpickle: never
            raise ValueError(
                f"{path}: holds Python objects (a pickle), which minibert never loads; save numbers"
            ) from None
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None


# safetensors' dtype names -> numpy's; BF16 has none and is widened to float32 on reading
_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
    "BF16": "<u2",
}


def read_safetensors_numpy(path: Path) -> tuple[dict, dict]:
    """(metadata, tensors as numpy arrays) of a safetensors file, read from its format: an 8-byte header
    length, a JSON header of dtype, shape and byte range per tensor, then the bytes. Unlike safetensors'
    numpy reader it takes bfloat16 (a float32 with its low 16 bits dropped)."""
    import numpy as np

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    try:
        size = int.from_bytes(data[:8], "little")
        if len(data) < 8 or size > len(data) - 8:
            raise ValueError("the header is longer than the file")
        header = json.loads(data[8 : 8 + size])
        metadata = header.pop("__metadata__", None) or {}
        body = memoryview(data)[8 + size :]
        tensors = {}
        for name, entry in header.items():
            kind = _SAFETENSORS_DTYPES.get(entry["dtype"])
            if kind is None:
                raise ValueError(f"tensor {name!r} has dtype {entry['dtype']}, which a dump does not hold")
            begin, end = entry["data_offsets"]
            shape = tuple(entry["shape"])
            if not 0 <= begin <= end <= len(body) or end - begin != np.dtype(kind).itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name!r}: its bytes {begin}..{end} do not fit the file or its shape")
            array = np.frombuffer(body[begin:end], dtype=kind).reshape(shape)
            if entry["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable safetensors dump ({e})") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: not a readable safetensors dump (its metadata is not an object)")
    return metadata, tensors
