"""The BERT encoder, in one file, top to bottom.

References:
  1) Devlin et al. 2018, "BERT: Pre-training of Deep Bidirectional Transformers for Language
     Understanding", https://arxiv.org/abs/1810.04805 (section 3 and figure 2: the input representation)
  2) Vaswani et al. 2017, "Attention Is All You Need", https://arxiv.org/abs/1706.03762, equation (1)
  3) google-research/bert `modeling.py`, the TensorFlow code the released checkpoints were trained with.

Notation used in the shape comments:
  B batch size, L sequence length, H hidden size, N attention heads, D head size (H = N * D),
  I intermediate (feed-forward) size.
Google's modeling.py writes B, F (from length), T (to length), N, and H for the *head* size: its H is
minibert's D, and minibert's H is its hidden_size.

Beside each module, its checkpoint names: `HF:` the Hugging Face key, `TF:` Google's variable scope.
docs/walkthrough.md follows the paper through this file. Reading and writing checkpoints lives in
`minibert/formats/checkpoint.py`, which adds `BertModel.from_pretrained` and `save_pretrained`; this file only
computes and imports nothing from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.config import BertConfig

# BERT's checkpoints were trained with the exact GELU, x * Phi(x) computed with erf, as in the first
# release of Google's modeling.py; its later versions (and "gelu_new") use the tanh approximation,
# which drifts from the checkpoints' numbers in the third decimal. The other entries serve configs
# that ask for them.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, L, H) the last layer's output
    pooler_output: torch.Tensor | None  # (B, H) tanh(dense([CLS])); None when the model has no pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings output, then each layer's: (B, L, H)
    attentions: tuple[torch.Tensor, ...] | None = None  # each layer's attention probabilities: (B, N, L, L)


class Embeddings(nn.Module):
    """A token's input vector is the sum of what it is, where it is, and which sentence it belongs to
    (the paper's figure 2: token + segment + position embeddings)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # HF: embeddings.word_embeddings · TF: bert/embeddings/word_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        # HF: embeddings.position_embeddings · TF: bert/embeddings/position_embeddings
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # HF: embeddings.token_type_embeddings · TF: bert/embeddings/token_type_embeddings
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        # HF: embeddings.LayerNorm · TF: bert/embeddings/LayerNorm. eps 1e-12, as the TensorFlow original
        # trained with: torch's default 1e-5 moves the outputs of all-MiniLM-L6-v2 by up to 7e-4.
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids):
        # (word + segment) + position, the order transformers adds them in: float addition is not
        # associative, and any other order moves the outputs by about 1e-7, no longer bit-exact.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, L, H)
        x = x + self.position_embeddings(position_ids)  # position_ids (B or 1, L) broadcast over the batch
        return self.dropout(self.norm(x))


def attention(q, k, v, mask=None, dropout_p=0.0, record=None):
    """Scaled dot-product attention, softmax(Q K^T / sqrt(D) + mask) V: equation (1) of Vaswani et al.
    with BERT's padding mask added to the scores. q, k, v (B, N, L, D); mask (B, 1, 1, L) or None.
    Returns the context (B, N, L, D) and the probabilities (B, N, L, L). `record(name, tensor)`, when
    given, sees the scores, the masked scores and the probabilities (minibert.tools.trace uses it)."""
    # Scaled by 1/sqrt(D) so the scores' spread does not grow with the head size.
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, N, L, L)
    masked = scores if mask is None else scores + mask  # (B, 1, 1, L) broadcast: padded keys get a huge negative
    probs = masked.softmax(dim=-1)  # (B, N, L, L), each row sums to 1
    if record is not None:
        record("scores", scores), record("masked_scores", masked), record("probs", probs)
    return F.dropout(probs, dropout_p, dropout_p > 0) @ v, probs  # (B, N, L, D)


class SelfAttention(nn.Module):
    """Multi-head self-attention: every token's query is compared with every token's key, and the softmax
    of the scaled scores weights the values. N heads do this side by side on D = H / N wide slices, and
    a linear layer mixes them.

    `implementation`: "sdpa" runs torch's fused scaled_dot_product_attention, which never materialises
    the (B, N, L, L) scores; "eager" runs `attention()` above, the equations step by step. They differ
    by rounding only: at most 5.2e-6 on any output of all-MiniLM-L6-v2 and bert-base (measured by
    scripts/parity_report.py), while eager is bit-identical to transformers' eager attention. Asking
    for the attention maps always takes the eager path.
    """

    def __init__(self, config: BertConfig, implementation: str = "sdpa"):
        super().__init__()
        if implementation not in ("sdpa", "eager"):
            raise ValueError(f"attention implementation must be 'sdpa' or 'eager', got {implementation!r}")
        self.implementation = implementation
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        # HF: encoder.layer.{i}.attention.self.{query,key,value} · TF: bert/encoder/layer_{i}/attention/self/...
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        # HF: encoder.layer.{i}.attention.output.dense · TF: bert/encoder/layer_{i}/attention/output/dense
        self.output = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.record = None  # a callback for attention()'s steps, set by minibert.tools.trace

    def forward(self, x, mask, output_attentions=False):
        B, L, H = x.shape
        N, D = self.num_heads, self.head_size
        q = self.query(x).view(B, L, N, D).transpose(1, 2)  # (B, N, L, D)
        k = self.key(x).view(B, L, N, D).transpose(1, 2)  # (B, N, L, D)
        v = self.value(x).view(B, L, N, D).transpose(1, 2)  # (B, N, L, D)
        dropout_p = self.dropout_p if self.training else 0.0

        if output_attentions or self.implementation == "eager":
            context, probs = attention(q, k, v, mask, dropout_p, self.record)
        else:
            probs = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, N, L, D)

        context = context.transpose(1, 2).reshape(B, L, H)  # (B, L, N, D) -> (B, L, H): heads side by side
        return self.output(context), probs


class FeedForward(nn.Module):
    """Position-wise: each token alone goes H -> I -> H through the activation."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # HF: encoder.layer.{i}.intermediate.dense · TF: bert/encoder/layer_{i}/intermediate/dense
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]
        # HF: encoder.layer.{i}.output.dense · TF: bert/encoder/layer_{i}/output/dense
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.down(self.act(self.up(x)))  # (B, L, H) -> (B, L, I) -> (B, L, H)


class Layer(nn.Module):
    """One transformer layer, post-LayerNorm as in the original Transformer and BERT:
    x = norm(x + sublayer(x)), first for attention, then for the feed-forward block."""

    def __init__(self, config: BertConfig, attention: str = "sdpa"):
        super().__init__()
        self.attention = SelfAttention(config, attention)
        # HF: encoder.layer.{i}.attention.output.LayerNorm · TF: bert/encoder/layer_{i}/attention/output/LayerNorm
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        # HF: encoder.layer.{i}.output.LayerNorm · TF: bert/encoder/layer_{i}/output/LayerNorm
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, mask, output_attentions=False):
        attended, probs = self.attention(x, mask, output_attentions)
        x = self.attention_norm(x + self.dropout(attended))  # (B, L, H)
        x = self.ffn_norm(x + self.dropout(self.ffn(x)))  # (B, L, H)
        return x, probs


class Pooler(nn.Module):
    """dense + tanh on the first token ([CLS]); trained by next-sentence prediction."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)  # HF: pooler.dense · TF: bert/pooler/dense

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # (B, L, H) -> (B, H)


def additive_mask(attention_mask, dtype):
    """(B, L) 1/0 padding mask -> (B, 1, 1, L) scores to add: 0 where a key may be attended, the most
    negative number of `dtype` where it is padding, so softmax gives it weight exp(-huge) = 0.

    Google's modeling.py adds -10000.0; minibert adds finfo(dtype).min, as transformers does, so the
    probabilities match transformers bit for bit (both give padded keys weight 0 in practice). It is
    built in the compute dtype: float32's minimum cast to float16 overflows to -inf, and a fully padded
    row of -inf turns into NaN; finfo(dtype).min stays finite and such a row merely averages. As in
    Google's code, padded *query* rows are still computed; their outputs mean nothing and pooling skips them.
    """
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, L), broadcast over heads and queries
    return (1.0 - keep) * torch.finfo(dtype).min


class BertModel(nn.Module):
    """Embeddings, `num_hidden_layers` Layers, and the pooler. `attention`: "sdpa" (fused, the default)
    or "eager" (the equations of `attention()`, step by step); see SelfAttention."""

    def __init__(self, config: BertConfig, add_pooler: bool = True, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config, attention) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # Fresh weights: N(0, initializer_range), zero biases, unit LayerNorm. Google initialised with a
        # normal truncated at two standard deviations; minibert, like transformers, draws a plain normal.
        # Only new heads are ever initialised here: a checkpoint's weights replace everything else.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L) wordpiece ids
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 for real tokens, 0 for padding; None: all ones
        token_type_ids: torch.Tensor | None = None,  # (B, L) segment ids; None: all zeros (sentence A)
        position_ids: torch.Tensor | None = None,  # (B, L) or (L,); None: 0, 1, ..., L-1
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        output_pooler: bool = True,  # False skips the pooler (pooler_output None) when nothing reads it
    ) -> EncoderOutput:
        check_inputs(self.config, input_ids, attention_mask, token_type_ids, position_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = self.positions(input_ids)  # (1, L): 0, 1, ..., L-1
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0)  # (1, L), broadcast over the batch

        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, L, H)

        mask = self.scores_bias(attention_mask, x)  # (B, 1, 1, L), what every layer adds to its scores

        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for layer in self.layers:
            x, probs = layer(x, mask, output_attentions)
            if output_hidden_states:
                hidden_states.append(x)
            if output_attentions:
                attentions.append(probs)

        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None and output_pooler else None,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def positions(self, input_ids):
        """Each token's position: 0, 1, ..., L-1, the same for every row. (BERT's relatives count otherwise:
        minibert/relatives.py.)"""
        return torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, L)

    def scores_bias(self, attention_mask, x):
        """What each layer adds to its attention scores (x: the embeddings, (B, L, H)): the padding mask in
        x's dtype, or nothing (None) without one."""
        return None if attention_mask is None else additive_mask(attention_mask, x.dtype)  # (B, 1, 1, L)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        *,
        device=None,
        dtype=None,
        revision=None,
        local_files_only=False,
        attention: str = "sdpa",
        warn_no_pooler: bool = True,
    ) -> BertModel:
        """Load a checkpoint folder or Hub id: safetensors (sharded or not), pytorch_model.bin, or a Google
        TensorFlow checkpoint. Weights are float32 unless `dtype` says otherwise; `attention` is "sdpa"
        (fused) or "eager" (the equations step by step). A checkpoint without pooler weights loads without
        a pooler, with a warning unless `warn_no_pooler=False`."""
        from minibert.formats.checkpoint import load_model

        return load_model(
            name_or_path,
            device=device,
            dtype=dtype,
            revision=revision,
            local_files_only=local_files_only,
            attention=attention,
            warn_no_pooler=warn_no_pooler,
        )

    def save_pretrained(self, directory) -> None:
        """Write `config.json` and `model.safetensors` under the Hugging Face names."""
        from minibert.formats.checkpoint import save_model

        save_model(self, directory)


# --- input checks, kept below the model so it reads without them -------------------------------------


def check_inputs(config, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
    """Refuse ids the embedding tables cannot look up, before the lookup (on CUDA an out-of-range index
    is a device-side assert that kills the process), and masks that are not 0/1."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(f"input_ids must be a (batch, length) tensor, got {_describe(input_ids)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    B, L = input_ids.shape
    if L == 0:
        raise ValueError("input_ids has length 0; every sequence needs at least one token")
    if L > config.max_position_embeddings and position_ids is None:
        raise ValueError(f"sequence length {L} exceeds max_position_embeddings {config.max_position_embeddings}")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.shape != input_ids.shape):
            raise ValueError(f"{name} is {_describe(t)}, but input_ids has shape {tuple(input_ids.shape)}")
    if position_ids is not None:
        if not isinstance(position_ids, torch.Tensor) or position_ids.shape not in ((L,), (1, L), (B, L)):
            expected = f"({L},), (1, {L}) or ({B}, {L})"
            raise ValueError(f"position_ids is {_describe(position_ids)}; expected shape {expected}")
    for name, t in (("token_type_ids", token_type_ids), ("position_ids", position_ids)):
        if t is not None and t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if attention_mask is not None:
        _check_mask(attention_mask)
    _check_range("input_ids", input_ids, config.vocab_size, "vocab_size")
    _check_range("token_type_ids", token_type_ids, config.type_vocab_size, "type_vocab_size")
    _check_range("position_ids", position_ids, config.max_position_embeddings, "max_position_embeddings")


def _describe(t):
    return f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else f"a {type(t).__name__}"


def _check_mask(mask):
    """1 marks a real token and 0 padding; any other value would scale the additive mask into a wrong
    answer (2 lets padding through, 0.5 half-masks, NaN poisons every output)."""
    if mask.dtype == torch.bool:
        return
    if mask.is_complex() or not (mask.is_floating_point() or mask.dtype in (torch.int64, torch.int32, torch.uint8)):
        raise ValueError(f"attention_mask must hold 0/1 integers, bools or 0.0/1.0 floats, got dtype {mask.dtype}")
    bad = (mask != 0) & (mask != 1)  # NaN is neither
    if bool(bad.any()):
        value = mask[bad][0].item()
        raise ValueError(f"attention_mask holds {value!r}; it must be 1 for real tokens and 0 for padding")


def _check_range(name, ids, limit, limit_name):
    if ids is None or ids.numel() == 0:
        return
    lo, hi = ids.min().item(), ids.max().item()
    if lo < 0 or hi >= limit:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds {bad}, outside [0, {limit_name} {limit})")
