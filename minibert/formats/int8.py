"""The saved int8 model format, written by `Encoder.save_pretrained` for an int8 encoder (and `minibert
quantize`), read by minibert/fast/quantize.py's `load_int8_model`.

A folder laid out like a Hugging Face one, with the tokenizer and sentence-transformers files, whose
config.json carries a "quantization" entry and names no transformers class:
    "architectures": ["MinibertInt8Model"],
    "quantization": {"method": "minibert-int8", "weight_max": 127 or 63 (the widest weight: 63 without VNNI)}
and whose weights are in model.int8.safetensors, a name no other tool looks for, so that nothing that reads
Hugging Face folders (transformers, sentence-transformers) mistakes the int8 values for float weights.
(Folders saved before this layout hold model.safetensors; they are read too.) For each quantized linear
layer, under its Hugging Face key prefix (encoder.layer.{i}.attention.self.query, ...), it holds:
    {prefix}.weight        int8     (out, in)   the smoothed weight, quantized per output channel
    {prefix}.weight_scale  float32  (out,)      its scale per output channel
    {prefix}.input_scale   float32  (in,)       1 / the smoothing factor each input channel is multiplied by
    {prefix}.bias          float32  (out,)
and every other tensor (embeddings, LayerNorms, pooler) as float, under its usual name.
"""

from __future__ import annotations

from pathlib import Path

from minibert.config import read_json
from minibert.formats.errors import CheckpointError

CONFIG_KEY = "quantization"  # the config.json entry that marks an int8 folder
METHOD = "minibert-int8"
ARCHITECTURE = "MinibertInt8Model"  # config.json's "architectures": no transformers class of that name
WEIGHTS = "model.int8.safetensors"
OLD_WEIGHTS = "model.safetensors"  # int8 folders saved before WEIGHTS was their name
WEIGHT_MAXES = (63, 127)
LAYER_PARTS = ("weight", "weight_scale", "input_scale")  # what each quantized layer must hold, besides its bias


def is_int8_folder(folder) -> bool:
    """Whether `folder` holds a saved int8 model (its config.json has a quantization entry)."""
    config = Path(folder) / "config.json"
    return config.is_file() and isinstance(values := read_json(config), dict) and CONFIG_KEY in values


def config_entry(weight_max: int) -> dict:
    """config.json's "quantization" entry for int8 layers whose weights reach at most `weight_max`."""
    return {"method": METHOD, "weight_max": weight_max}


def weights_file(folder) -> Path:
    """The int8 folder's weights file (model.int8.safetensors, or model.safetensors in an older folder)."""
    folder = Path(folder)
    for name in (WEIGHTS, OLD_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder} is an int8 model folder without its weights ({WEIGHTS})")


def read_entry(folder) -> dict:
    """The quantization entry of an int8 folder's config.json, refused unless it is this format's."""
    path = Path(folder) / "config.json"
    entry = read_json(path).get(CONFIG_KEY)
    if not isinstance(entry, dict) or entry.get("method") != METHOD:
        raise CheckpointError(f"{path}: {CONFIG_KEY} {entry!r:.80} is not a {METHOD!r} entry")
    weight_max = entry.get("weight_max", 127)
    if isinstance(weight_max, bool) or weight_max not in WEIGHT_MAXES:
        raise CheckpointError(f"{path}: {CONFIG_KEY}.weight_max is {weight_max!r:.40}; it must be 63 or 127")
    return entry


def layer_tensors(prefix: str, parts: dict) -> dict:
    """One quantized layer's tensors under their keys in model.safetensors (`parts` by suffix)."""
    return {f"{prefix}.{suffix}": t for suffix, t in parts.items()}


def split_layers(tensors: dict, origin: dict) -> tuple[dict, dict]:
    """A saved int8 checkpoint's tensors -> (float tensors, {layer prefix: {suffix: tensor}}). Each
    quantized layer's weight also appears among the floats, dequantized, so that the encoder's own checks
    (names, shapes, finite values) see every weight in its place."""
    floats, layers = {}, {}
    for key, t in tensors.items():
        base, _, suffix = key.rpartition(".")
        if suffix in ("weight_scale", "input_scale") or (suffix == "weight" and str(t.dtype) in ("torch.int8", "int8")):
            layers.setdefault(base, {})[suffix] = t
        else:
            floats[key] = t
    for base, parts in layers.items():
        where = origin[f"{base}.{next(iter(parts))}"]
        missing = sorted(set(LAYER_PARTS) - parts.keys())
        if missing:
            raise CheckpointError(f"{where}: int8 layer {base!r} lacks its {missing[0]}")
        _check_layer(base, parts, where)
        floats[base + ".weight"] = parts["weight"].float() * parts["weight_scale"][:, None] / parts["input_scale"]
    return floats, layers


def _check_layer(base: str, parts: dict, where) -> None:
    """A quantized layer's tensors as the format says: an int8 (out, in) weight, and scales of float dtype,
    (out,) and (in,), finite and positive. A scale that is negated, zero, NaN or of another shape would
    load and compute vectors far from the model's."""
    weight = parts["weight"]
    if weight.dim() != 2:
        raise CheckpointError(f"{where}: {base}.weight has shape {tuple(weight.shape)}; an int8 weight is (out, in)")
    for suffix, size in (("weight_scale", weight.shape[0]), ("input_scale", weight.shape[1])):
        t, key = parts[suffix], f"{base}.{suffix}"
        if not t.is_floating_point():
            raise CheckpointError(f"{where}: {key} has dtype {t.dtype}; scales are float32")
        if tuple(t.shape) != (size,):
            raise CheckpointError(f"{where}: {key} has shape {tuple(t.shape)}; the weight needs ({size},)")
        bad = ~(t.float().isfinite() & (t.float() > 0))
        if bool(bad.any()):
            raise CheckpointError(f"{where}: {key} holds {float(t[bad][0])!r}; scales must be finite and positive")
