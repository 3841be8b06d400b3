"""The engine's numpy backend: the numpy specification's forward (minibert/tools/spec.py) on padded batches,
one after another. Torch-free."""

from __future__ import annotations

import numpy as np

from minibert.config import BertConfig
from minibert.tools import spec


class NumpyBackend:
    """Float32 weights by Hugging Face name behind the engine's backend interface (minibert/engine/core.py)."""

    xp = np

    def __init__(self, weights: dict, config: BertConfig):
        self.weights, self.config = weights, config
        self.has_pooler = "pooler.dense.weight" in weights
        self.vocabulary = False  # token vectors, never a masked-LM head's logits

    def forward(self, arrays: dict, pooler: bool):
        """(h (B, L, H), m (B, L, 1), pooler output or None) for padded numpy `arrays`."""
        ids, types, mask = arrays["input_ids"], arrays["token_type_ids"], arrays["attention_mask"]
        output = spec.encode(self.weights, self.config, ids, None if mask.all() else mask, types)
        h = output["last_hidden_state"]
        return h, mask[:, :, None].astype(h.dtype), output["pooler_output"]

    def map(self, fn, batches: list):
        return map(fn, batches)

    def empty(self, n: int, dim: int):
        return np.empty((n, dim), dtype=np.float32)

    def to_numpy(self, x):
        return x
