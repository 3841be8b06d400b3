"""The oneDNN fast path (minibert/fast/onednn.py) against the plain model it was made from."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from reference import assert_outputs_match

from minibert import BertModel, Encoder, Tokenizer
from minibert.fast import cpu
from minibert.fast.onednn import FusedLayer, FusedLinear, fuse_linear_layers, onednn_linear

TEXTS = ["A man is eating food.", "Short.", "A somewhat longer sentence about the weather in spring " * 3, ""]


@pytest.fixture(autouse=True)
def _onednn_float32():
    """These tests are about the oneDNN path, which minibert.fast.cpu turns off for float32 where it does not
    pay (AVX2): run it on every machine (tests/test_cpu.py covers the decision)."""
    with cpu.override(onednn_f32=True):
        yield


def test_fused_model_matches_plain_model(minilm_dir):
    plain = BertModel.from_pretrained(minilm_dir)
    fused = fuse_linear_layers(copy.deepcopy(plain))
    assert isinstance(fused.layers[0].ffn.up, FusedLinear) and fused.layers[0].ffn.up.gelu
    assert fused.state_dict().keys() == plain.state_dict().keys()
    batch = Tokenizer.from_pretrained(minilm_dir)(TEXTS)
    with torch.inference_mode():
        assert_outputs_match(
            fused(**batch, output_hidden_states=True, output_attentions=True),
            plain(**batch, output_hidden_states=True, output_attentions=True),
            batch["attention_mask"],
        )


@pytest.fixture
def fused_forwards(monkeypatch):
    """Counts the FusedLayer forwards that took the fused path (each packs or reuses its stacked QKV weight)."""
    calls = []
    packed_qkv = FusedLayer.packed_qkv
    monkeypatch.setattr(FusedLayer, "packed_qkv", lambda self: calls.append(self) or packed_qkv(self))
    return calls


def test_fused_layers_match_the_plain_model(minilm_dir, fused_forwards):
    """The fused forward (one QKV product, residuals added inside the products), with and without a
    padding mask, against the plain model: hidden states of every layer, and the pooler."""
    if onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN linear kernel")
    plain = BertModel.from_pretrained(minilm_dir)
    fused = fuse_linear_layers(copy.deepcopy(plain))
    assert all(type(layer) is FusedLayer for layer in fused.layers)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    for texts in (TEXTS, ["one query"]):
        batch = tokenizer(texts)
        with torch.inference_mode():
            assert_outputs_match(
                fused(**batch, output_hidden_states=True),
                plain(**batch, output_hidden_states=True),
                batch["attention_mask"],
            )
    assert len(fused_forwards) == 2 * len(fused.layers)


def test_fused_layers_step_aside_for_what_they_do_not_cover(minilm_dir, fused_forwards):
    """Attention maps, the eager attention, training, hooks on a linear layer, a changed weight: the plain
    Layer.forward runs (or the packed weight is remade), and the results are the plain model's."""
    if onednn_linear() is None:
        pytest.skip("this torch build has no oneDNN linear kernel")
    plain = BertModel.from_pretrained(minilm_dir)
    fused = fuse_linear_layers(copy.deepcopy(plain))
    batch = Tokenizer.from_pretrained(minilm_dir)(TEXTS[:2])
    with torch.inference_mode():
        assert fused(**batch, output_attentions=True).attentions is not None
        seen = []
        hook = fused.layers[2].attention.key.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        out = fused(**batch)
        hook.remove()
        assert seen == [(2, batch["input_ids"].shape[1], 384)]  # the hooked layer ran on its own
        assert len(fused_forwards) == len(fused.layers) - 1  # the others fused
        mask = batch["attention_mask"]
        assert_outputs_match(out, plain(**batch), mask)
        for model in (plain, fused):
            model.layers[1].attention.value.weight.mul_(0.5)  # in place, as an optimizer step would
        assert_outputs_match(fused(**batch), plain(**batch), mask)
    fused_forwards.clear()
    fused.train()
    torch.manual_seed(0)
    a = fused(**batch)
    torch.manual_seed(0)
    assert_outputs_match(a, plain.train()(**batch), mask)  # dropout drew the same masks: the plain path ran
    a.last_hidden_state.sum().backward()
    assert fused.layers[0].attention.query.weight.grad is not None
    eager = fuse_linear_layers(BertModel.from_pretrained(minilm_dir, attention="eager"))
    with torch.inference_mode():
        eager(**batch)
    assert fused_forwards == []


def test_encoder_fuses_layers_only_where_that_pays(minilm_dir):
    """Without the oneDNN float32 kernel (AVX2) a float32 Encoder keeps the plain layers, which are then
    as fast and skip the checks; int8 layers are fused there too (one product for query, key and value)."""
    from minibert.model import Layer

    with cpu.override(onednn_f32=False):
        plain = Encoder.from_pretrained(minilm_dir)
        assert type(plain.model.layers[0]) is Layer and type(plain.model.layers[0].attention.query) is torch.nn.Linear
        from minibert.fast.quantize import int8_available

        if int8_available():
            assert type(Encoder.from_pretrained(minilm_dir, quantize="int8").model.layers[0]) is FusedLayer
    assert type(Encoder.from_pretrained(minilm_dir).model.layers[0]) is FusedLayer


def test_the_pooler_runs_only_when_asked(minilm_dir):
    model = BertModel.from_pretrained(minilm_dir)
    ids = torch.tensor([[101, 7592, 102]])
    with torch.inference_mode():
        assert model(ids, output_pooler=False).pooler_output is None
        torch.testing.assert_close(
            model(ids).pooler_output, torch.tanh(model.pooler.dense(model(ids).last_hidden_state[:, 0]))
        )


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


def test_fast_paths_refuse_a_layout_they_do_not_know(minilm_dir):
    """A renamed module makes the fast paths refuse by name instead of silently skipping the layer."""
    from minibert.fast.quantize import calibration_batches, int8_available, quantize_int8

    model = BertModel.from_pretrained(minilm_dir)
    renamed = copy.deepcopy(model)
    attention = renamed.layers[3].attention
    attention.q = attention.query
    del attention.query
    with pytest.raises(
        ValueError,
        match=r"layers\.3\.attention \(SelfAttention\) has no 'query' layer to swap; "
        r"it has key, value, output, q",
    ):
        fuse_linear_layers(renamed)
    if int8_available():
        with pytest.raises(ValueError, match=r"layers\.3\.attention \(SelfAttention\) has no 'query' layer"):
            quantize_int8(renamed, calibration_batches(Tokenizer.from_pretrained(minilm_dir), 32))
    with pytest.raises(ValueError, match="no SelfAttention and FeedForward modules"):
        fuse_linear_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    fused = fuse_linear_layers(copy.deepcopy(model))  # whole FeedForwards replaced, state dict unchanged
    assert type(fused.layers[0].ffn).__name__ == "GeluFeedForward" and fused.layers[0].ffn.up.gelu
    assert fused.state_dict().keys() == model.state_dict().keys()
    assert fuse_linear_layers(fused) is fused and isinstance(fused.layers[0].ffn.up, FusedLinear)  # idempotent


def test_encoder_runs_batches_side_by_side_and_restores_threads(minilm_dir):
    fast = Encoder.from_pretrained(minilm_dir)
    plain = Encoder.from_pretrained(minilm_dir, fast=False)
    texts = [f"sentence number {i} " * (i % 7 + 1) for i in range(40)]
    before = torch.get_num_threads()
    got = fast.encode(texts, batch_size=3)  # 14 batches, one per core at a time
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(got, plain.encode(texts, batch_size=3), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got, fast.encode(texts, batch_size=40), atol=1e-6, rtol=0)
