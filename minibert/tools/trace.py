"""Watch one forward pass: every named step of BertModel, in the order the code computes it.

`trace(model, batch)` runs the model's own modules, watched by forward hooks, with the explicit attention
path, whose `attention()` function reports its scores and probabilities. Nothing is computed twice.
It works on any model minibert builds: where a fast path has folded the GELU into the first feed-forward
projection (Encoder's oneDNN layers, int8), the trace runs the GELU apart, so that `ffn.up` is the value
before it, as its name says. The hooks and that switch are on the model itself for the length of the
call: do not trace a model that another thread is running.

The steps, their order, shapes and what each holds are written once, in minibert/tools/steps.py
(the same names in `minibert dump`); docs/activations.md says where each is taken and what padded
positions hold.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F

from minibert.model import BertModel
from minibert.tools.steps import step_names


@contextmanager
def recording(model: BertModel):
    """Within the block, every forward of `model` fills the yielded dict {step name: tensor}, in order."""
    steps: dict[str, torch.Tensor] = {}

    def output_of(name):
        return lambda module, inputs, output: steps.__setitem__(name, output.detach())

    def input_of(name):  # a copy: an int8 layer may quantize its input in place
        return lambda module, inputs: steps.__setitem__(name, inputs[0].detach().clone())

    def keep(prefix, name, t):  # attention()'s own steps, through SelfAttention.record
        steps[prefix + name] = t.detach()

    e = model.embeddings
    hooks = [
        e.word_embeddings.register_forward_hook(output_of("embeddings.word")),
        e.token_type_embeddings.register_forward_hook(output_of("embeddings.token_type")),
        e.position_embeddings.register_forward_hook(output_of("embeddings.position")),
        e.norm.register_forward_pre_hook(input_of("embeddings.sum")),
        e.norm.register_forward_hook(output_of("embeddings.output")),
    ]
    for i, layer in enumerate(model.layers):
        p = f"layers.{i}."
        a, f = layer.attention, layer.ffn
        hooks += [
            a.query.register_forward_hook(output_of(p + "attention.query")),
            a.key.register_forward_hook(output_of(p + "attention.key")),
            a.value.register_forward_hook(output_of(p + "attention.value")),
            a.output.register_forward_pre_hook(input_of(p + "attention.context")),
            a.output.register_forward_hook(output_of(p + "attention.output")),
            layer.attention_norm.register_forward_pre_hook(input_of(p + "attention.residual")),
            layer.attention_norm.register_forward_hook(output_of(p + "attention.norm")),
            *_unfold_gelu(f),
            f.up.register_forward_hook(output_of(p + "ffn.up")),
            f.down.register_forward_pre_hook(input_of(p + "ffn.act")),
            f.down.register_forward_hook(output_of(p + "ffn.down")),
            layer.ffn_norm.register_forward_pre_hook(input_of(p + "ffn.residual")),
            layer.ffn_norm.register_forward_hook(output_of(p + "ffn.norm")),
        ]
        a.record = partial(keep, p + "attention.")
    if model.pooler is not None:
        hooks += [
            model.pooler.dense.register_forward_hook(output_of("pooler.dense")),
            model.pooler.register_forward_hook(output_of("pooler.output")),
        ]
    try:
        yield steps
    finally:
        for hook in hooks:
            hook.remove()
        for layer in model.layers:
            layer.attention.record = None
            if getattr(layer.ffn.up, "folded_gelu", False):
                layer.ffn.up.gelu, layer.ffn.up.folded_gelu = True, False


def _unfold_gelu(ffn) -> list:
    """For a feed-forward block whose `up` applies the GELU itself (minibert.fast.onednn.GeluFeedForward), switch
    that off and apply the exact GELU to `down`'s input instead (a hook ahead of every other), so the
    trace sees the value before the GELU; `recording` switches it back. Returns the hooks it added."""
    if not getattr(ffn.up, "gelu", False):
        return []
    hook = ffn.down.register_forward_pre_hook(lambda module, inputs: (F.gelu(inputs[0]),), prepend=True)
    ffn.up.gelu, ffn.up.folded_gelu = False, True
    return [hook]


def trace(model: BertModel, batch: dict) -> dict[str, torch.Tensor]:
    """Run `model` on `batch` (input_ids, and optionally attention_mask, token_type_ids) and return every
    step's tensor by name, in computation order. The explicit attention path is used, so the scores
    and probabilities exist; results equal an ordinary forward's."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    with recording(model) as steps, torch.no_grad():
        model(**inputs, output_attentions=True)
    if "attention_mask" not in inputs:  # no mask: masked_scores are the scores
        for i in range(len(model.layers)):
            steps.setdefault(f"layers.{i}.attention.masked_scores", steps[f"layers.{i}.attention.scores"])
    order = step_names(len(model.layers), model.pooler is not None)
    missing = [n for n in order if n not in steps]
    if missing:
        raise RuntimeError(f"the trace missed step {missing[0]!r}: the model's modules are not BertModel's")
    return {name: steps[name] for name in order}


def statistics(t: torch.Tensor) -> dict:
    """mean, std, min, max and L2 norm of a tensor, as Python floats."""
    x = t.double()
    return {
        "mean": x.mean().item(),
        "std": x.std(unbiased=False).item(),
        "min": x.min().item(),
        "max": x.max().item(),
        "norm": x.norm().item(),
    }


def component_parameters(model: BertModel) -> dict[str, int]:
    """Parameters per component, counted on the modules themselves."""
    counts = {"embeddings": sum(p.numel() for p in model.embeddings.parameters())}
    counts["layers"] = sum(p.numel() for layer in model.layers for p in layer.parameters())
    if model.pooler is not None:
        counts["pooler"] = sum(p.numel() for p in model.pooler.parameters())
    return counts


def flops_per_token(config, length: int) -> int:
    """Multiply-adds x 2 for one token of a `length`-token sequence: the projections and feed-forward
    (2 x their weights), and attention's two products over the sequence (2 x 2 x length x H per layer)."""
    H, I = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (2 * (4 * H * H + 2 * H * I) + 4 * length * H)


def attention_summary(probs: torch.Tensor, tokens: list[str], top: int = 3) -> dict:
    """One layer's (N, L, L) probabilities over real tokens -> each head's mean entropy (nats) over the
    queries, and the tokens [CLS] attends to most, averaged over the heads."""
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1).mean(-1)  # (N,)
    cls = probs[:, 0].mean(0)  # (L,)
    weights, index = cls.topk(min(top, cls.numel()))
    return {
        "entropy": [round(float(e), 4) for e in entropy],
        "cls_attends_to": [(tokens[int(j)], round(float(w), 4)) for w, j in zip(weights, index)],
    }
