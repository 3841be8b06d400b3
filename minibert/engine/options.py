"""One call's settings for the engine as one value, checked once when it is made: pooling, normalisation,
the longest input and which side a longer one loses, whether it may be cut at all, a prompt, and the
micro-batch size. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from minibert.engine.pooling import POOLINGS

TRUNCATION_SIDES = ("right", "left")


@dataclass(frozen=True)
class EmbedOptions:
    pooling: str = "mean"  # a key of minibert.engine.pooling.POOLINGS
    normalize: bool = False  # scale each vector to unit length (L2)
    max_length: int | None = None  # tokens per input, [CLS] and [SEP] included; None: the model's limit
    # (checked against the model's position table by Engine.options, which knows the model)
    truncate: bool = True  # False: an input longer than max_length is an error naming it, not cut short
    truncation_side: str = "right"  # which end of a longer input is cut: right keeps the start, left the end
    prompt: str = ""  # put before every text, and counted against max_length as sentence-transformers does
    batch_size: int = 32  # texts per forward (a micro-batch), at most; fewer for long texts (max_batch_tokens)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose from {', '.join(POOLINGS)}")
        for name in ("normalize", "truncate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise ValueError(f"truncation_side must be right or left, got {self.truncation_side!r}")
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
