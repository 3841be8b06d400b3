"""The oneDNN fast path (minibert/fast.py) against the plain model it was made from."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from parity import assert_outputs_match

from minibert import BertModel, Encoder, Tokenizer
from minibert.fast import FusedLinear, fuse_linear_layers, onednn_linear

TEXTS = ["A man is eating food.", "Short.", "A somewhat longer sentence about the weather in spring " * 3, ""]


def test_fused_model_matches_plain_model(minilm_dir):
    plain = BertModel.from_pretrained(minilm_dir)
    fused = fuse_linear_layers(copy.deepcopy(plain))
    assert isinstance(fused.layers[0].ffn.up, FusedLinear) and fused.layers[0].ffn.up.gelu
    assert fused.state_dict().keys() == plain.state_dict().keys()
    batch = Tokenizer.from_pretrained(minilm_dir)(TEXTS)
    with torch.inference_mode():
        assert_outputs_match(fused(**batch, output_hidden_states=True, output_attentions=True),
                             plain(**batch, output_hidden_states=True, output_attentions=True),
                             batch["attention_mask"])


def test_fused_linear_uses_onednn_only_for_inference():
    if onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN linear kernel")
    linear = torch.nn.Linear(8, 16)
    fused = FusedLinear(linear, gelu=True)
    x = torch.randn(3, 5, 8)
    expected = torch.nn.functional.gelu(linear(x))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, atol=1e-6, rtol=0)
    y = fused(x)  # gradients wanted: the plain path, which autograd can differentiate
    y.sum().backward()
    assert linear.weight.grad is not None


def test_packed_weight_follows_the_weight():
    if onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN linear kernel")
    linear = torch.nn.Linear(8, 16)
    fused = FusedLinear(linear)
    x = torch.randn(4, 8)
    with torch.no_grad():
        fused(x)  # packs the weight
        linear.weight.mul_(-3.0)  # as an optimizer step would: in place
        torch.testing.assert_close(fused(x), linear(x), atol=1e-6, rtol=0)
        linear.load_state_dict({"weight": torch.randn(16, 8), "bias": torch.randn(16)})
        torch.testing.assert_close(fused(x), linear(x), atol=1e-6, rtol=0)
        twin = copy.deepcopy(fused)  # copies carry the weight, not the opaque packed tensor
        torch.testing.assert_close(twin(x), linear(x), atol=1e-6, rtol=0)
        fused.bfloat16()
        assert fused(x.bfloat16()).dtype == torch.bfloat16


def test_encoder_fast_and_plain_agree(minilm_dir):
    fast = Encoder.from_pretrained(minilm_dir)
    plain = Encoder.from_pretrained(minilm_dir, fast=False)
    assert isinstance(fast.model.layers[0].attention.query, FusedLinear)
    assert not isinstance(plain.model.layers[0].attention.query, FusedLinear)
    np.testing.assert_allclose(fast.encode(TEXTS), plain.encode(TEXTS), atol=1e-6, rtol=0)


def test_forward_unpadded_equals_the_padded_path(minilm_dir):
    from minibert.fast import forward_unpadded

    model = fuse_linear_layers(BertModel.from_pretrained(minilm_dir))
    batch = Tokenizer.from_pretrained(minilm_dir)(TEXTS + ["x"], ["a pair for each"] * 5)
    keep = batch["attention_mask"].bool()
    assert keep.float().mean() < 0.8  # the batch really is ragged
    with torch.inference_mode():
        padded = model(**batch)
        packed = forward_unpadded(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(packed.last_hidden_state[keep], padded.last_hidden_state[keep], atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.pooler_output, padded.pooler_output, atol=1e-5, rtol=0)
    assert (packed.last_hidden_state[~keep] == 0).all()
    with pytest.raises(ValueError, match="input_ids holds 30522"):
        forward_unpadded(model, torch.full((1, 3), 30522), torch.ones(1, 3, dtype=torch.long))


def test_encoder_runs_batches_side_by_side_and_restores_threads(minilm_dir):
    fast = Encoder.from_pretrained(minilm_dir)
    plain = Encoder.from_pretrained(minilm_dir, fast=False)
    texts = [f"sentence number {i} " * (i % 7 + 1) for i in range(40)]
    before = torch.get_num_threads()
    got = fast.encode(texts, batch_size=3)  # 14 batches, one per core at a time
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(got, plain.encode(texts, batch_size=3), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got, fast.encode(texts, batch_size=40), atol=1e-6, rtol=0)
