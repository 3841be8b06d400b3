"""Token vectors -> one vector per text: the pooling modes as one table, and L2 normalisation, each written
once for both backends. `xp` is the backend's array module (numpy or torch); h is (B, L, H) float32, m the
(B, L, 1) mask of real tokens in h's dtype, pooler the (B, H) pooler output where the model has one.

The modes are sentence-transformers' Pooling modes (mean, cls, max, mean_sqrt_len), BERT's pooler, and
SPLADE's max over the masked-LM logits (sentence-transformers' SpladePooling, "max" and "relu").
Torch-free at import."""

from __future__ import annotations


def mean(xp, h, m, pooler):
    return (h * m).sum(1) / m.sum(1).clip(min=1e-9)


def mean_sqrt_len(xp, h, m, pooler):
    return (h * m).sum(1) / m.sum(1).clip(min=1e-9) ** 0.5


def max_(xp, h, m, pooler):
    # real tokens keep their values exactly; padding becomes the dtype's lowest value, which never wins
    return xp.amax(h * m + (1 - m) * xp.finfo(h.dtype).min, 1)


def cls(xp, h, m, pooler):
    return h[:, 0]


def pooler_output(xp, h, m, pooler):
    return pooler


def splade(xp, h, m, pooler):
    # SPLADE: h is the masked-LM head's logits (B, L, V); each vocabulary entry's weight is the largest
    # log(1 + relu(logit)) over the real tokens. log1p and relu never decrease, so that is log1p(relu()) of
    # the largest logit: the same value, from one pass over the logits (250 MB for 2,048 tokens of a
    # 30,522-entry vocabulary) where applying them first, and masking, took four. A text's real tokens
    # come first in its row (padding is on the right), so its largest is taken over them alone.
    lengths = m[:, :, 0].sum(1).tolist()
    largest = xp.stack([xp.amax(h[i, : int(n)], 0) for i, n in enumerate(lengths)])  # (B, V)
    return xp.log1p(largest.clip(min=0))


# name -> (function, what it needs beyond the token vectors: None, "pooler" (the model's pooler weights), or
# "vocabulary" (a masked-LM head's logits in place of the token vectors: SparseEncoder))
POOLINGS = {
    "mean": (mean, None),
    "cls": (cls, None),
    "pooler": (pooler_output, "pooler"),
    "max": (max_, None),
    "mean_sqrt_len": (mean_sqrt_len, None),
    "splade": (splade, "vocabulary"),
}
DENSE_POOLINGS = tuple(name for name, (_, needs) in POOLINGS.items() if needs != "vocabulary")


def pool(xp, h, m, pooling: str, pooler=None):
    """(B, H) vectors from (B, L, H) token vectors and their (B, L, 1) mask, by the mode named `pooling`."""
    return POOLINGS[pooling][0](xp, h, m, pooler)


def l2_normalize(xp, v):
    """Each row scaled to unit length; a zero row stays zero (its norm is held to at least 1e-12)."""
    return v / ((v * v).sum(1) ** 0.5).clip(min=1e-12)[:, None]
