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

import warnings
from pathlib import Path

import numpy as np

from minibert.config import BertConfig, read_json
from minibert.formats.hub import default_model, resolve
from minibert.formats.sentence_transformers import read_sentence_transformers_settings
from minibert.settings import check_batch_size, check_max_length, check_pooling, check_vocabulary, saved_quantization
from minibert.tokenizer import Tokenizer, as_text_list
from minibert.tools import spec


class NumpyEncoder:
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
        check_pooling(pooling, "pooler.dense.weight" in weights)
        check_vocabulary(tokenizer, config)
        if max_length is not None:
            check_max_length(max_length, config)
        self.weights, self.config, self.tokenizer = weights, config, tokenizer
        self.pooling, self.normalize, self.max_length, self.lowercase = pooling, normalize, max_length, lowercase

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

    @property
    def dim(self) -> int:
        return self.config.hidden_size

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
        pooling = self.pooling if pooling is None else pooling
        normalize = self.normalize if normalize is None else normalize
        if max_length is None:
            max_length = self.max_length
        if max_length is None:
            max_length = min(self.tokenizer.model_max_length, self.config.max_position_embeddings)
        check_max_length(max_length, self.config)
        check_pooling(pooling, "pooler.dense.weight" in self.weights)
        check_batch_size(batch_size)

        if self.lowercase:
            texts = [t.lower() for t in texts]
        encodings = self.tokenizer.encode(texts, max_length=max_length)
        truncated = sum(1 for e in encodings if e.overflowing)
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
        if truncated:
            warnings.warn(
                f"{truncated} of {len(texts)} texts were longer than {max_length} tokens and were truncated",
                stacklevel=2,
            )
        return out[0] if single else out


def numpy_can_load(folder) -> bool:
    """Whether `folder` holds what the numpy backend runs: float weights in model.safetensors, and the exact
    GELU."""
    folder = Path(folder)
    config = folder / "config.json"
    if not (folder / "model.safetensors").is_file() or not config.is_file() or saved_quantization(folder):
        return False
    values = read_json(config)
    return isinstance(values, dict) and values.get("hidden_act", "gelu") == "gelu"


def expected_shapes(config: BertConfig) -> dict:
    """Every weight the encoder reads, under the specification's names, with its shape."""
    H, I = config.hidden_size, config.intermediate_size  # noqa: E741
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, H),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, H),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, H),
        "embeddings.LayerNorm.weight": (H,),
        "embeddings.LayerNorm.bias": (H,),
    }
    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, out_features, in_features in (
            ("attention.self.query", H, H),
            ("attention.self.key", H, H),
            ("attention.self.value", H, H),
            ("attention.output.dense", H, H),
            ("intermediate.dense", I, H),
            ("output.dense", H, I),
        ):
            shapes[p + name + ".weight"] = (out_features, in_features)
            shapes[p + name + ".bias"] = (out_features,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (H,)
    return shapes


def check_weights(weights: dict, config: BertConfig, path) -> None:
    """Refuse a missing, misshapen or non-finite weight by name, rather than compute with it."""
    shapes = expected_shapes(config)
    if "pooler.dense.weight" in weights:
        shapes.update(
            {
                "pooler.dense.weight": (config.hidden_size, config.hidden_size),
                "pooler.dense.bias": (config.hidden_size,),
            }
        )
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
