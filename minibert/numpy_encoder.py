"""Sentence embeddings without torch, for small jobs: the numpy specification (minibert/tools/spec.py) behind
the Encoder's interface.

A command that embeds a handful of texts spends most of its time importing torch. numpy, tokenizers and
safetensors load in a fraction of that, and the specification's forward pass over a few short texts
takes milliseconds. `Encoder.from_pretrained(..., backend="numpy")` returns a NumpyEncoder, and
`minibert similarity` picks one for a few texts. Its vectors are within 1e-5 of the torch Encoder's
(tests/test_numpy_encoder.py); on a corpus it is slower than torch, so use it for queries and commands.

    >>> encoder = NumpyEncoder.from_pretrained()      # all-MiniLM-L6-v2, no torch imported
    >>> encoder.encode(["a first text", "a second text"])   # (2, 384) float32
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minibert.config import BertConfig, read_json
from minibert.engine.core import Engine
from minibert.engine.numpy_backend import NumpyBackend
from minibert.engine.text_encoder import TextEncoder
from minibert.formats.hub import default_model, resolve
from minibert.formats.int8 import is_int8_folder
from minibert.formats.names import hf_shapes
from minibert.formats.sentence_transformers import read_sentence_transformers_settings
from minibert.tokenizer import Tokenizer
from minibert.tools import spec


class NumpyEncoder(TextEncoder):
    """An Encoder whose forward pass is minibert.tools.spec.encode, in float32 numpy (the engine's numpy
    backend)."""

    def __init__(
        self,
        weights: dict,
        config: BertConfig,
        tokenizer: Tokenizer,
        *,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        lowercase: bool = False,
        prompts: dict | None = None,
        default_prompt_name: str | None = None,
    ):
        self.weights = weights
        engine = Engine(
            NumpyBackend(weights, config),
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            lowercase=lowercase,
            max_batch_tokens=None,  # one batch at a time, sorted by length: this backend is for a few texts
            prompt=(prompts or {}).get(default_prompt_name, ""),
        )
        super().__init__(engine, prompts, default_prompt_name)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path=None,
        *,
        revision=None,
        local_files_only=False,
        lowercase: bool | None = None,
        max_length: int | None = None,
    ) -> NumpyEncoder:
        """Load a model folder with a model.safetensors (or a Hub id), as Encoder.from_pretrained does:
        the same sentence-transformers settings, the same tokenizer. Every weight the configuration needs
        is checked for presence, shape and finite values."""
        folder = (
            default_model()
            if name_or_path is None
            else resolve(name_or_path, revision=revision, local_files_only=local_files_only)
        )
        folder = Path(folder)
        config = BertConfig.from_json(folder / "config.json")
        if config.model_type != "bert":
            raise ValueError(
                f"{folder / 'config.json'}: the numpy backend computes BERT, not model_type "
                f"{config.model_type!r}; use backend='torch'"
            )
        if config.hidden_act != "gelu":
            raise ValueError(
                f"{folder / 'config.json'}: the numpy backend computes the exact GELU, not "
                f"hidden_act {config.hidden_act!r}; use backend='torch'"
            )
        if not numpy_can_load(folder):
            raise ValueError(
                f"{folder}: the numpy backend reads float weights from model.safetensors, and "
                "this folder has none (or holds an int8 model); use backend='torch'"
            )
        weights = spec.load_weights(folder)
        check_weights(weights, config, folder / "model.safetensors")
        tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
        settings = read_sentence_transformers_settings(folder)
        if max_length is not None:
            settings["max_length"] = max_length
        return cls(weights, config, tokenizer, **settings)


def numpy_can_load(folder) -> bool:
    """Whether `folder` holds what the numpy backend runs: float weights in model.safetensors, and the exact
    GELU."""
    folder = Path(folder)
    config = folder / "config.json"
    if not (folder / "model.safetensors").is_file() or not config.is_file() or is_int8_folder(folder):
        return False
    values = read_json(config)
    return (
        isinstance(values, dict)
        and values.get("hidden_act", "gelu") == "gelu"
        and values.get("model_type", "bert") == "bert"
    )


def check_weights(weights: dict, config: BertConfig, path) -> None:
    """Refuse a missing, misshapen, non-finite or unknown weight by name, rather than compute with it (or
    leave a checkpoint's weight unused), as the torch loader does."""
    shapes = hf_shapes(config, pooler="pooler.dense.weight" in weights)
    unknown = [key for key in weights if key not in shapes]
    if unknown:
        raise ValueError(f"{path}: unexpected key {unknown[0]!r}")
    for key, shape in shapes.items():
        if key not in weights:
            raise ValueError(f"{path}: weight {key!r} is missing")
        if weights[key].shape != shape:
            raise ValueError(f"{path}: weight {key!r} has shape {weights[key].shape}, the config needs {shape}")
        if not np.isfinite(weights[key]).all():
            bad = int((~np.isfinite(weights[key])).sum())
            raise ValueError(f"{path}: weight {key!r} holds {bad} NaN or infinite values")
