"""Test helpers shared by the parity tests: output-by-output comparison of minibert against transformers,
and randomised LayerNorms so that a swapped one cannot hide."""

from __future__ import annotations

import torch

ATOL = 1e-5  # float32 on CPU, every output


def assert_outputs_match(ours, ref, attention_mask=None, atol=ATOL, attentions=True):
    """last_hidden_state, every hidden state and every attention map at real (unpadded) positions (for
    attention maps: the rows of real query tokens, over all keys), and pooler_output; assert_close
    prints the largest difference and where it is on failure."""
    keep = slice(None) if attention_mask is None else attention_mask.bool()
    torch.testing.assert_close(ours.last_hidden_state[keep], ref.last_hidden_state[keep], atol=atol, rtol=0)
    torch.testing.assert_close(ours.pooler_output, getattr(ref, "pooler_output", None), atol=atol, rtol=0)
    if ref.hidden_states is not None:
        assert len(ours.hidden_states) == len(ref.hidden_states)
        for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
            torch.testing.assert_close(
                a[keep], b[keep], atol=atol, rtol=0, msg=lambda m, i=i: f"hidden_states[{i}]: {m}"
            )
    if attentions and ref.attentions is not None:
        assert len(ours.attentions) == len(ref.attentions)
        for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions)):
            # rows of real query tokens: (B, N, L, L) -> (B, L, N, L)[keep] -> (tokens, N, L)
            a, b = a.transpose(1, 2)[keep], b.transpose(1, 2)[keep]
            torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, i=i: f"attentions[{i}]: {m}")


def assert_both_paths_match(model, reference, batch: dict, atol=ATOL):
    """minibert's explicit attention path (maps returned) and its fused path against the reference."""
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True, output_attentions=True)
        ours = model(**batch, output_hidden_states=True, output_attentions=True)
        assert_outputs_match(ours, expected, batch["attention_mask"], atol=atol)
        fused = model(**batch, output_hidden_states=True)
        assert_outputs_match(fused, expected, batch["attention_mask"], atol=atol, attentions=False)


def max_abs_diffs(ours, ref, attention_mask) -> dict[str, float]:
    """The largest |difference| per output, for reports."""
    keep = attention_mask.bool()
    out = {
        "last_hidden_state": (ours.last_hidden_state - ref.last_hidden_state)[keep].abs().max().item(),
        "pooler_output": (ours.pooler_output - ref.pooler_output).abs().max().item(),
    }
    if ours.hidden_states is not None:
        pairs = zip(ours.hidden_states, ref.hidden_states)
        out["hidden_states"] = max((a - b)[keep].abs().max().item() for a, b in pairs)
    if ours.attentions is not None:
        out["attentions"] = max(
            (a - b).transpose(1, 2)[keep].abs().max().item() for a, b in zip(ours.attentions, ref.attentions)
        )
    return out


def randomize_(model: torch.nn.Module, std: float = 0.1) -> None:
    """The reference's init leaves LayerNorm at 1/0 and biases at zero, which would hide a swapped or
    dropped LayerNorm or bias; give them random values too (weight matrices keep initializer_range)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.normal_(1.0, std)
            elif name.endswith("bias") or "LayerNorm" in name:
                p.normal_(0.0, std)
