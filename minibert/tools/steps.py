"""The step graph of one forward pass, written once: every step that `trace` records and `minibert dump`
writes, in the order the code computes it, what each is computed from, its shape and what it holds; and
which of a step's values belong to real (unpadded) tokens. Numpy only: `compare` reads it without torch.

In LAYER_STEPS, a step of layer i is named `layers.{i}.<name>`, and "{p}" stands for the layer's input:
embeddings.output for layer 0, layers.{i-1}.ffn.norm after it. docs/activations.md says where in
minibert/model.py each step is taken.
"""

from __future__ import annotations

import re

import numpy as np

# name: (the steps it is computed from, shape, what it holds)
EMBEDDING_STEPS = {
    "embeddings.word": (["inputs.input_ids", "inputs.token_type_ids"], "(B, L, H)", "the word table's vectors"),
    "embeddings.token_type": (["inputs.input_ids", "inputs.token_type_ids"], "(B, L, H)", "the segment table's"),
    "embeddings.position": (["inputs.input_ids", "inputs.token_type_ids"], "(B, L, H)", "the position table's"),
    "embeddings.sum": (
        ["embeddings.word", "embeddings.token_type", "embeddings.position"],
        "(B, L, H)",
        "their sum, before the LayerNorm",
    ),
    "embeddings.output": (["embeddings.sum"], "(B, L, H)", "after the LayerNorm: hidden state 0"),
}
LAYER_STEPS = {
    "attention.query": (["{p}"], "(B, L, H)", "the query projection, heads side by side"),
    "attention.key": (["{p}"], "(B, L, H)", "the key projection"),
    "attention.value": (["{p}"], "(B, L, H)", "the value projection"),
    "attention.scores": (["attention.query", "attention.key"], "(B, N, L, L)", "Q K^T / sqrt(D), per head"),
    "attention.masked_scores": (["attention.scores"], "(B, N, L, L)", "with the padding mask (MPNet: and bias) added"),
    "attention.probs": (["attention.masked_scores"], "(B, N, L, L)", "softmax over the keys"),
    "attention.context": (["attention.probs", "attention.value"], "(B, L, H)", "probs @ V, heads side by side"),
    "attention.output": (["attention.context"], "(B, L, H)", "the output projection"),
    "attention.residual": (["{p}", "attention.output"], "(B, L, H)", "input + attention output, before the LayerNorm"),
    "attention.norm": (["attention.residual"], "(B, L, H)", "after the LayerNorm"),
    "ffn.up": (["attention.norm"], "(B, L, I)", "the first feed-forward projection, before the GELU"),
    "ffn.act": (["ffn.up"], "(B, L, I)", "after the activation"),
    "ffn.down": (["ffn.act"], "(B, L, H)", "the second projection"),
    "ffn.residual": (["attention.norm", "ffn.down"], "(B, L, H)", "attention.norm + ffn.down, before the LayerNorm"),
    "ffn.norm": (["ffn.residual"], "(B, L, H)", "after the LayerNorm: hidden state i + 1"),
}
POOLER_STEPS = {
    "pooler.dense": (["{last}"], "(B, H)", "dense([CLS]), before the tanh"),
    "pooler.output": (["pooler.dense"], "(B, H)", "tanh of it: pooler_output"),
}
HEAD_STEPS = {  # written by `minibert dump --head`, not by trace
    "heads.mlm.logits": (["{last}"], "(B, L, V)", "the masked-LM head's logits"),
    "heads.nsp.logits": (["pooler.output"], "(B, 2)", "the next-sentence head's logits"),
}


def step_names(num_layers: int, pooler: bool = True, token_types: bool = True) -> list[str]:
    """Every step name, in computation order (without the segment table's for a model that has none:
    MPNet, DistilBERT)."""
    names = [n for n in EMBEDDING_STEPS if token_types or n != "embeddings.token_type"]
    names += [f"layers.{i}.{n}" for i in range(num_layers) for n in LAYER_STEPS]
    return names + (list(POOLER_STEPS) if pooler else [])


def step_inputs(name: str, num_layers: int) -> list[str]:
    """The steps `name` is computed from ([] for a name outside the graph)."""
    last = f"layers.{num_layers - 1}.ffn.norm"
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in LAYER_STEPS:
        i = int(m.group(1))
        previous = "embeddings.output" if i == 0 else f"layers.{i - 1}.ffn.norm"
        return [previous if s == "{p}" else f"layers.{i}.{s}" for s in LAYER_STEPS[m.group(2)][0]]
    inputs = {**EMBEDDING_STEPS, **POOLER_STEPS, **HEAD_STEPS}.get(name, ([], "", ""))[0]
    return [last if s == "{last}" else s for s in inputs]


def real_positions(shape: tuple, attention_mask) -> np.ndarray:
    """Which values of a step of `shape` belong to real tokens, as a boolean array that broadcasts to
    `shape`, given the (B, L) attention mask (1 real, 0 padding): in (B, N, L, L) attention tensors the real
    query rows over the real key columns, in (B, L, ...) tensors the real tokens' rows, and everything in
    any other tensor (the pooler's (B, H), the next-sentence logits)."""
    keep = np.asarray(attention_mask).astype(bool)
    shape = tuple(shape)
    if len(shape) == 4 and shape[0] == keep.shape[0] and shape[2:] == (keep.shape[1],) * 2:
        return keep[:, None, :, None] & keep[:, None, None, :]
    if len(shape) >= 2 and shape[:2] == keep.shape:
        return keep.reshape(*keep.shape, *([1] * (len(shape) - 2)))
    return np.ones((1,) * len(shape), dtype=bool)
