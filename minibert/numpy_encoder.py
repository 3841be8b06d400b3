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
from minibert.formats.hub import default_model, resolve
from minibert.formats.int8 import is_int8_folder
from minibert.formats.names import hf_shapes
from minibert.formats.sentence_transformers import read_sentence_transformers_settings
from minibert.settings import EncoderSettings, warn_truncated
from minibert.tokenizer import Tokenizer, as_text_list
from minibert.tools import spec


class NumpyEncoder(EncoderSettings):
    """An Encoder whose forward pass is minibert.tools.spec.encode, in float32 numpy."""

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
    ):
        super().__init__(
            config,
            tokenizer,
            "pooler.dense.weight" in weights,
            pooling=pooling,
            normalize=normalize,
            max_length=max_length,
            lowercase=lowercase,
        )
        self.weights = weights

    @classmethod
    def from_pretrained(
        cls, name_or_path=None, *, revision=None, local_files_only=False, lowercase: bool | None = None
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
        return cls(weights, config, tokenizer, **read_sentence_transformers_settings(folder))

    def encode(
        self,
        texts,
        *,
        pooling: str | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
    ):
        """Embed a string, giving (H,), or a list of strings, giving (N, H), float32, rows in input order."""
        single = isinstance(texts, str)
        texts = as_text_list(texts, "texts")
        out, stats = self._encode(
            texts, pooling=pooling, normalize=normalize, batch_size=batch_size, max_length=max_length
        )
        warn_truncated(stats["truncated"], len(texts), stats["max_length"])
        return out[0] if single else out

    def _encode(
        self, texts: list[str], *, pooling=None, normalize=None, batch_size=32, max_length=None, show_progress=None
    ):
        """encode's work on a list of strings: the vectors, and {tokens, truncated, max_length} (as the torch
        Encoder's, for encode_stream). No progress bar: this backend is for a few texts."""
        pooling, normalize, max_length = self.options(pooling, normalize, max_length, batch_size)
        encodings, truncated = self.tokenize(texts, max_length)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))  # little padding per batch
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad_arrays([encodings[i] for i in rows])
            ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
            output = spec.encode(self.weights, self.config, ids, None if mask.all() else mask, types)
            vectors = pool(output["last_hidden_state"], mask, pooling, output["pooler_output"])
            if normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out[rows] = vectors
        return out, {"tokens": sum(len(e.ids) for e in encodings), "truncated": truncated, "max_length": max_length}


def numpy_can_load(folder) -> bool:
    """Whether `folder` holds what the numpy backend runs: float weights in model.safetensors, and the exact
    GELU."""
    folder = Path(folder)
    config = folder / "config.json"
    if not (folder / "model.safetensors").is_file() or not config.is_file() or is_int8_folder(folder):
        return False
    values = read_json(config)
    return isinstance(values, dict) and values.get("hidden_act", "gelu") == "gelu"


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


def pool(h: np.ndarray, mask: np.ndarray, pooling: str, pooler_output=None) -> np.ndarray:
    """(B, L, H) token vectors -> (B, H), ignoring padding; as minibert.encoder.pool."""
    m = mask[:, :, None].astype(h.dtype)
    if pooling == "mean":
        return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if pooling == "mean_sqrt_len":
        return (h * m).sum(1) / np.sqrt(np.maximum(m.sum(1), 1e-9))
    if pooling == "max":
        return np.where(m > 0, h, np.finfo(h.dtype).min).max(1)
    if pooling == "cls":
        return h[:, 0]
    return pooler_output
