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
    if hasattr(e, "project"):
        raise ValueError(
            "the trace follows BERT's embeddings; this model's are narrower than its layers and projected "
            "(ELECTRA's embedding_size), which it does not show"
        )
    hooks = [
        e.word_embeddings.register_forward_hook(output_of("embeddings.word")),
        e.position_embeddings.register_forward_hook(output_of("embeddings.position")),
        e.norm.register_forward_pre_hook(input_of("embeddings.sum")),
        *(
            [e.token_type_embeddings.register_forward_hook(output_of("embeddings.token_type"))]
            if model.config.has_token_types
            else []
        ),
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
    order = step_names(len(model.layers), model.pooler is not None, model.config.has_token_types)
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
    if hasattr(model, "relative_attention_bias"):  # MPNet
        counts["relative bias"] = model.relative_attention_bias.weight.numel()
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


# --- one text, traced and reported (`minibert inspect`, `minibert attention`) ----------------------------


def one_text(model=None, text: str = "", pair: str | None = None, lowercase: bool | None = None):
    """(folder, BertModel, batch, wordpieces) for one text (and an optional second segment) on the model
    folder or Hub id `model` (default: all-MiniLM-L6-v2), cut to the model's longest input with a warning."""
    import warnings

    from minibert.formats.hub import default_model
    from minibert.settings import max_length_for
    from minibert.tokenizer import Tokenizer

    folder = model or default_model()
    tokenizer = Tokenizer.from_pretrained(folder, lowercase=lowercase)
    bert = BertModel.from_pretrained(folder, warn_no_pooler=False)
    limit = max_length_for(tokenizer, bert.config)
    encodings = tokenizer.encode([text], None if pair is None else [pair], max_length=limit)
    if encodings[0].overflowing:
        warnings.warn(f"the text was longer than {limit} tokens and was truncated", stacklevel=2)
    batch = tokenizer.collate(encodings)
    return folder, bert, batch, tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())


def report(model: BertModel, batch: dict, tokens: list[str], folder="") -> dict:
    """What `minibert inspect` shows, as plain data: the config, the wordpieces, every step's shape and
    statistics, each layer's attention summary, the mean / [CLS] / pooler vectors' norms and cosines, the
    parameters per component, and the FLOPs per token."""
    config = model.config
    steps = trace(model, batch)
    last = steps[f"layers.{len(model.layers) - 1}.ffn.norm"][0]  # (L, H)
    vectors = {"mean": last.mean(0), "cls": last[0]}
    if model.pooler is not None:
        vectors["pooler"] = steps["pooler.output"][0]
    names = list(vectors)
    cosines = {
        f"{a}~{b}": round(float(F.cosine_similarity(vectors[a], vectors[b], dim=0)), 4)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    params = component_parameters(model)
    sizes = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
    return {
        "model": str(folder),
        "config": {k: getattr(config, k) for k in sizes},
        "tokens": [
            {"token": t, "id": int(i), "segment": int(s)}
            for t, i, s in zip(tokens, batch["input_ids"][0], batch["token_type_ids"][0])
        ],
        "steps": [
            {
                "name": name,
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                **{k: round(v, 6) for k, v in statistics(t).items()},
            }
            for name, t in steps.items()
        ],
        "attention": [
            attention_summary(steps[f"layers.{i}.attention.probs"][0], tokens) for i in range(len(model.layers))
        ],
        "vectors": {"norms": {k: round(float(v.norm()), 4) for k, v in vectors.items()}, "cosines": cosines},
        "parameters": {
            **params,
            "total": sum(params.values()),
            "formula": config.parameter_count(pooler=model.pooler is not None),
        },
        "flops_per_token": flops_per_token(config, len(tokens)),
    }


def format_report(report: dict) -> str:
    """`report` as the text `minibert inspect` prints."""
    import math

    from minibert.tools.terminal import display_width, pad, printable

    c, tokens = report["config"], [printable(row["token"]) for row in report["tokens"]]
    lines = [
        f"model {printable(report['model'])}: {c['num_hidden_layers']} layers, hidden {c['hidden_size']}, "
        f"{c['num_attention_heads']} heads, intermediate {c['intermediate_size']}, vocabulary {c['vocab_size']}"
    ]
    width = max(display_width(t) for t in tokens + ["token"])
    lines.append(f"\n{'#':>4}  {pad('token', width)}  {'id':>6}  segment")
    for i, (token, row) in enumerate(zip(tokens, report["tokens"])):
        lines.append(f"{i:>4}  {pad(token, width)}  {row['id']:>6}  {row['segment']:>7}")
    name_width = max(len(s["name"]) for s in report["steps"])
    lines.append(f"\n{'step':<{name_width}}  {'shape':<16} {'mean':>9} {'std':>9} {'min':>9} {'max':>9} {'norm':>9}")
    for s in report["steps"]:
        shape = "(" + ", ".join(map(str, s["shape"])) + ")"
        lines.append(
            f"{s['name']:<{name_width}}  {shape:<16} {s['mean']:>9.4f} {s['std']:>9.4f} {s['min']:>9.4f} "
            f"{s['max']:>9.4f} {s['norm']:>9.3f}"
        )
    lines.append(
        "\nattention: each head's mean entropy (nats; uniform over the tokens would be "
        f"{math.log(len(tokens)):.2f}), and the tokens [CLS] attends to most"
    )
    for i, a in enumerate(report["attention"]):
        entropies = " ".join(f"{e:.2f}" for e in a["entropy"])
        top = ", ".join(f"{printable(t)} {w:.2f}" for t, w in a["cls_attends_to"])
        lines.append(f"  layer {i:>2}: {entropies}   [CLS] -> {top}")
    norms, cosines = report["vectors"]["norms"], report["vectors"]["cosines"]
    lines.append(
        "\nvectors: "
        + ", ".join(f"{k} |{v:.3f}|" for k, v in norms.items())
        + "; cosines "
        + ", ".join(f"{k} {v:.3f}" for k, v in cosines.items())
    )
    p = report["parameters"]
    parts = ", ".join(f"{k} {v:,}" for k, v in p.items() if k not in ("total", "formula"))
    lines.append(f"parameters: {parts}; total {p['total']:,} (formula: {p['formula']:,})")
    lines.append(
        f"FLOPs per token at length {len(tokens)}: {report['flops_per_token']:,} (layers x (2 x (4H^2 + 2HI) + 4LH))"
    )
    return "\n".join(lines)
