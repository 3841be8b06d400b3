"""An encoder's settings, checked before any work: pooling, max_length, batch size, and whether a
tokenizer belongs to a model. Torch-free, shared by the torch Encoder, the numpy one and the CLI."""

from __future__ import annotations

from pathlib import Path

from minibert.config import BertConfig, read_json

POOLINGS = ("mean", "cls", "pooler", "max", "mean_sqrt_len")


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


def saved_quantization(folder) -> bool:
    """Whether `folder` holds an int8 model that Encoder.save_pretrained wrote (config.json says so)."""
    config = Path(folder) / "config.json"
    return config.is_file() and isinstance(values := read_json(config), dict) and "quantization" in values
