"""minibert/tools/trace.py and `minibert inspect`: the trace of one forward pass, checked against the model's
own outputs and against transformers' hidden states and attention maps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from reference import randomize_

from minibert import BertConfig, BertModel, Tokenizer
from minibert.tools.steps import step_names
from minibert.tools.trace import component_parameters, flops_per_token, trace

TEXTS = ["The cat sat on the mat.", "A second, longer sentence to pad the first one."]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return BertModel.from_pretrained(minilm_dir), Tokenizer.from_pretrained(minilm_dir)


def test_trace_names_every_step_in_order_and_agrees_with_the_reference(minilm, hf_minilm):
    model, tokenizer = minilm
    batch = tokenizer(TEXTS)
    steps = trace(model, batch)
    assert list(steps) == step_names(6)
    with torch.no_grad():
        ref = hf_minilm(**batch, output_hidden_states=True, output_attentions=True)
    # the explicit path is the reference's arithmetic: hidden states and maps are equal, bit for bit
    assert torch.equal(steps["embeddings.output"], ref.hidden_states[0])
    for i in range(6):
        assert torch.equal(steps[f"layers.{i}.ffn.norm"], ref.hidden_states[i + 1])
        assert torch.equal(steps[f"layers.{i}.attention.probs"], ref.attentions[i])
    assert torch.equal(steps["pooler.output"], ref.pooler_output)
    # the steps are what their names say
    s, last = steps, "layers.5."
    torch.testing.assert_close(
        s["embeddings.sum"],
        s["embeddings.word"] + s["embeddings.token_type"] + s["embeddings.position"],
        atol=1e-6,
        rtol=0,
    )
    torch.testing.assert_close(
        s[last + "attention.residual"], s["layers.4.ffn.norm"] + s[last + "attention.output"], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(s[last + "ffn.act"], torch.nn.functional.gelu(s[last + "ffn.up"]), atol=0, rtol=0)
    padded = batch["attention_mask"] == 0
    added = (s[last + "attention.masked_scores"] - s[last + "attention.scores"]).abs().amax(dim=(1, 2))  # (B, L)
    assert added[padded].min() > 1e30 and added[~padded].max() == 0
    assert s[last + "attention.probs"].shape == (2, 12, 13, 13) and s[last + "ffn.up"].shape == (2, 13, 1536)


def test_trace_without_a_pooler_or_a_mask(tmp_path):
    import transformers

    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    ref = transformers.BertModel(config, add_pooling_layer=False)
    randomize_(ref)
    ref.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="no pooler weights"):
        model = BertModel.from_pretrained(tmp_path)
    steps = trace(model, {"input_ids": torch.tensor([[2, 7, 9, 3]])})
    assert list(steps) == step_names(2, pooler=False)
    assert torch.equal(steps["layers.1.attention.masked_scores"], steps["layers.1.attention.scores"])


def test_parameter_formula_counts_the_modules():
    for kwargs in (
        {},
        dict(
            vocab_size=99,
            hidden_size=24,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=40,
            type_vocab_size=3,
        ),
    ):
        config = BertConfig(**kwargs)
        for pooler in (True, False):
            with torch.device("meta"):
                model = BertModel(config, add_pooler=pooler)
            assert config.parameter_count(pooler) == sum(p.numel() for p in model.parameters())
            assert config.parameter_count(pooler) == sum(component_parameters(model).values())
    assert BertConfig().parameter_count() == 109_482_240  # bert-base-uncased, as published (110M)
    base = BertConfig()
    assert flops_per_token(base, 128) == 12 * (2 * (4 * 768**2 + 2 * 768 * 3072) + 4 * 128 * 768)


def test_inspect_command(minilm_dir):
    result = subprocess.run(
        [sys.executable, "-m", "minibert", "inspect", "--json", "The cat sat.", "它很累。"],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tokens = [t["token"] for t in report["tokens"]]
    assert tokens[:5] == ["[CLS]", "the", "cat", "sat", "."] and [t["segment"] for t in report["tokens"]][-1] == 1
    assert [s["name"] for s in report["steps"]] == step_names(6)
    probs = next(s for s in report["steps"] if s["name"] == "layers.0.attention.probs")
    assert probs["shape"] == [1, 12, len(tokens), len(tokens)] and probs["min"] >= 0 and probs["max"] <= 1
    assert len(report["attention"]) == 6 and len(report["attention"][0]["entropy"]) == 12
    assert report["parameters"]["total"] == report["parameters"]["formula"] == 22_713_216
    assert set(report["vectors"]["cosines"]) == {"mean~cls", "mean~pooler", "cls~pooler"}
    text = subprocess.run(
        [sys.executable, "-m", "minibert", "inspect", "word " * 600], capture_output=True, timeout=300
    )
    assert text.returncode == 0
    assert b"minibert: warning: the text was longer than 512 tokens and was truncated" in text.stderr
    assert b"layers.5.ffn.norm" in text.stdout and b"FLOPs per token at length 512" in text.stdout


def _real(t, mask):
    """The values at real tokens of a (B, L, ...) step, flattened."""
    return t[mask.bool()].flatten().double()


def test_trace_of_an_encoders_fused_model_gives_each_step_its_true_value(minilm):
    """Encoder folds the GELU into the first feed-forward projection (minibert/fast/onednn.py); the trace must
    still record ffn.up before the GELU, and every step as the plain model has it."""
    model, tokenizer = minilm
    from minibert import Encoder
    from minibert.fast import cpu

    with cpu.override(onednn_f32=True):  # the fused layers, on any CPU (without AVX-512 Encoder keeps plain ones)
        encoder = Encoder.from_pretrained()
    assert type(encoder.model.layers[0].ffn).__name__ == "GeluFeedForward"
    batch = tokenizer(TEXTS)
    before = encoder.encode(TEXTS)
    fused, plain = trace(encoder.model, batch), trace(model, batch)
    assert list(fused) == list(plain)
    for name in plain:
        torch.testing.assert_close(fused[name], plain[name], atol=2e-4, rtol=1e-4, msg=name)
    up = fused["layers.0.ffn.up"]
    assert up.min() < -5  # before the GELU, whose minimum is -0.17
    torch.testing.assert_close(fused["layers.0.ffn.act"], torch.nn.functional.gelu(up), atol=1e-6, rtol=0)
    assert (encoder.encode(TEXTS) == before).all()  # the model computes as before once the trace is done


def test_trace_of_an_int8_model_gives_each_step_its_true_value(minilm):
    """int8 layers fold the GELU too, and the last projections quantize their input in place: the trace
    records the values before either, and its hidden states are the int8 model's own."""
    model, tokenizer = minilm
    from minibert import Encoder

    encoder = Encoder.from_pretrained(quantize="int8")
    batch = tokenizer(TEXTS)
    with torch.no_grad():  # on the trace's own (explicit) attention path: int8's rounding of the activations
        # turns SDPA's float-rounding difference (1e-6) into a quantization step (0.007 measured) in places
        own = encoder.model(**batch, output_hidden_states=True, output_attentions=True)
    steps, plain = trace(encoder.model, batch), trace(model, batch)
    mask = batch["attention_mask"]
    for i in range(6):
        torch.testing.assert_close(
            _real(steps[f"layers.{i}.ffn.norm"], mask), _real(own.hidden_states[i + 1], mask), atol=1e-5, rtol=0
        )
        up = steps[f"layers.{i}.ffn.up"]
        torch.testing.assert_close(steps[f"layers.{i}.ffn.act"], torch.nn.functional.gelu(up), atol=1e-6, rtol=0)
        for name in ("attention.context", "ffn.up", "ffn.act"):  # int8's error, not a different quantity
            a, b = _real(steps[f"layers.{i}.{name}"], mask), _real(plain[f"layers.{i}.{name}"], mask)
            assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.98, (i, name)
