"""The BERT encoder in plain numpy: the executable specification.

A third implementation, beside minibert/model.py and Hugging Face's, in small functions over a dict of
arrays under the checkpoint's own (Hugging Face) names, with no torch. It computes in the dtype of the
weights it is given: float32 matches BertModel to 1e-5, float64 to 1e-10 (tests/test_spec.py).

    >>> weights = load_weights("path/to/bert")          # {"embeddings.word_embeddings.weight": array, ...}
    >>> out = encode(weights, config, input_ids, attention_mask)
    >>> out["last_hidden_state"], out["pooler_output"], out["hidden_states"]

Notation: B batch, L length, H hidden, N heads, D = H / N head size, I intermediate size.
"""

from __future__ import annotations

import math

import numpy as np

ERF = np.vectorize(math.erf, otypes=[np.float64])


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # the biased variance, as torch's LayerNorm
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    """The exact GELU, x * Phi(x) with Phi from erf, as BERT was trained."""
    return (x * 0.5 * (1.0 + ERF(x / math.sqrt(2.0)))).astype(x.dtype)


def linear(x, w, prefix):
    """x @ W^T + b for the Linear layer stored under `prefix` (torch layout: weight is (out, in)).
    As one (B*L, in) matrix product: numpy runs a stacked (B, L, in) product as B small ones."""
    y = x.reshape(-1, x.shape[-1]) @ w[prefix + ".weight"].T
    return y.reshape(*x.shape[:-1], -1) + w[prefix + ".bias"]


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def embeddings(w, config, input_ids, token_type_ids):
    """Word + segment + position vectors, then LayerNorm: (B, L) ids -> (B, L, H)."""
    L = input_ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.token_type_embeddings.weight"][token_type_ids]
    x = x + w["embeddings.position_embeddings.weight"][np.arange(L)]
    return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], config.layer_norm_eps)


def attention(w, config, x, mask, i):
    """Multi-head self-attention of layer i: softmax(Q K^T / sqrt(D) + mask) V, heads side by side."""
    B, L, H = x.shape
    N = config.num_attention_heads
    D = H // N
    p = f"encoder.layer.{i}.attention."

    def heads(t):  # (B, L, H) -> (B, N, L, D)
        return t.reshape(B, L, N, D).transpose(0, 2, 1, 3)

    q, k, v = (heads(linear(x, w, p + "self." + name)) for name in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(np.array(D, dtype=x.dtype))  # (B, N, L, L)
    probs = softmax(scores + mask)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, L, H)  # heads side by side again
    return linear(context, w, p + "output.dense"), probs


def layer(w, config, x, mask, i):
    """One post-LayerNorm transformer layer: norm(x + attention(x)), then norm(x + ffn(x))."""
    p = f"encoder.layer.{i}."
    eps = config.layer_norm_eps
    attended, probs = attention(w, config, x, mask, i)
    x = layer_norm(
        x + attended, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
    )
    hidden = gelu(linear(x, w, p + "intermediate.dense"))  # (B, L, I)
    x = layer_norm(
        x + linear(hidden, w, p + "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps
    )
    return x, probs


def encode(w, config, input_ids, attention_mask=None, token_type_ids=None):
    """The whole encoder. Returns last_hidden_state, pooler_output (None without pooler weights),
    hidden_states (embeddings, then each layer) and attentions (each layer's probabilities)."""
    if config.hidden_act != "gelu":
        raise ValueError(f"the numpy specification implements the exact GELU, not {config.hidden_act!r}")
    input_ids = np.asarray(input_ids)
    if token_type_ids is None:
        token_type_ids = np.zeros_like(input_ids)
    x = embeddings(w, config, input_ids, np.asarray(token_type_ids))
    mask = np.zeros((1, 1, 1, input_ids.shape[1]), dtype=x.dtype)
    if attention_mask is not None:
        check_mask(attention_mask)  # (B, 1, 1, L): the most negative number where a key is padding
        mask = (1 - np.asarray(attention_mask)[:, None, None, :]).astype(x.dtype) * np.finfo(x.dtype).min
    hidden_states, attentions = [x], []
    for i in range(config.num_hidden_layers):
        x, probs = layer(w, config, x, mask, i)
        hidden_states.append(x)
        attentions.append(probs)
    pooler = np.tanh(linear(x[:, 0], w, "pooler.dense")) if "pooler.dense.weight" in w else None
    return {"last_hidden_state": x, "pooler_output": pooler, "hidden_states": hidden_states, "attentions": attentions}


def check_mask(attention_mask) -> None:
    """1 marks a real token and 0 padding; any other value would scale the mask into a wrong answer (2 lets
    padding through, 0.5 half-masks, NaN poisons every output), as BertModel refuses too."""
    mask = np.asarray(attention_mask)
    if mask.dtype != bool:
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            raise ValueError(
                f"attention_mask holds {mask[bad][0].item()!r}; it must be 1 for real tokens and 0 for padding"
            )


def load_weights(folder, dtype=np.float32) -> dict:
    """The encoder's weights of a `model.safetensors` folder as numpy arrays under Hugging Face names
    (without `bert.`), read with safetensors' numpy reader: no torch."""
    from pathlib import Path

    from safetensors.numpy import load_file

    from minibert.formats.names import is_ignored, normalize_key

    path = Path(folder) / "model.safetensors"
    tensors = load_file(path)
    weights = {}
    for key, t in tensors.items():
        norm = normalize_key(key)
        if is_ignored(norm):
            continue
        if not np.issubdtype(t.dtype, np.floating):
            raise ValueError(f"{path}: {key!r} has dtype {t.dtype}; expected floating point")
        if norm in weights:
            raise ValueError(f"{path}: {key!r} fills {norm!r}, which another key already filled")
        weights[norm] = t.astype(dtype)
    return weights
