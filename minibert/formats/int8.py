"""The saved int8 model format, written by `Encoder.save_pretrained` for an int8 encoder (and `minibert
quantize`), read by minibert/fast/quantize.py's `load_int8_model`.

A Hugging Face-layout folder whose config.json carries a "quantization" entry:
    {"method": "minibert-int8", "weight_max": 127 or 63 (the widest int8 weight: 63 without VNNI)}
and whose model.safetensors holds, for each quantized linear layer under its Hugging Face key prefix
(encoder.layer.{i}.attention.self.query, ...):
    {prefix}.weight        int8     (out, in)   the smoothed weight, quantized per output channel
    {prefix}.weight_scale  float32  (out,)      its scale per output channel
    {prefix}.input_scale   float32  (in,)       1 / the smoothing factor each input channel is multiplied by
    {prefix}.bias          float32  (out,)
and every other tensor (embeddings, LayerNorms, pooler) as float, under its usual name.
"""

from __future__ import annotations

from pathlib import Path

from minibert.config import read_json

CONFIG_KEY = "quantization"  # the config.json entry that marks an int8 folder
METHOD = "minibert-int8"
LAYER_PARTS = ("weight", "weight_scale", "input_scale")  # what each quantized layer must hold, besides its bias


def is_int8_folder(folder) -> bool:
    """Whether `folder` holds a saved int8 model (its config.json has a quantization entry)."""
    config = Path(folder) / "config.json"
    return config.is_file() and isinstance(values := read_json(config), dict) and CONFIG_KEY in values


def config_entry(weight_max: int) -> dict:
    """config.json's "quantization" entry for int8 layers whose weights reach at most `weight_max`."""
    return {"method": METHOD, "weight_max": weight_max}


def read_entry(folder) -> dict:
    """The quantization entry of an int8 folder's config.json, refused unless it is this format's."""
    path = Path(folder) / "config.json"
    entry = read_json(path).get(CONFIG_KEY) or {}
    if not isinstance(entry, dict) or entry.get("method") != METHOD:
        from minibert.formats.errors import CheckpointError

        raise CheckpointError(f"{path}: quantization {entry!r} is not {METHOD!r}")
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
        missing = sorted(set(LAYER_PARTS) - parts.keys())
        if missing:
            from minibert.formats.errors import CheckpointError

            where = origin[f"{base}.{next(iter(parts))}"]
            raise CheckpointError(f"{where}: int8 layer {base!r} lacks its {missing[0]}")
        floats[base + ".weight"] = parts["weight"].float() * parts["weight_scale"][:, None] / parts["input_scale"]
    return floats, layers
