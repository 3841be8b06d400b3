"""Bad inputs to the forward: a ValueError naming the value and the limit, before any embedding lookup."""

from __future__ import annotations

import pytest
import torch

from minibert import BertConfig, BertModel


@pytest.fixture(scope="module")
def model():
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=12,
        type_vocab_size=2,
    )
    return BertModel(config).eval()


def ids(*shape, high=50):
    return torch.randint(0, high, shape)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: m(torch.tensor([[1, 50, 3]])), r"input_ids holds 50, outside \[0, vocab_size 50\)"),
        (lambda m: m(torch.tensor([[1, -1, 3]])), r"input_ids holds -1, outside \[0, vocab_size 50\)"),
        (
            lambda m: m(ids(2, 4), token_type_ids=torch.full((2, 4), 2)),
            r"token_type_ids holds 2, outside \[0, type_vocab_size 2\)",
        ),
        (lambda m: m(ids(1, 13)), "sequence length 13 exceeds max_position_embeddings 12"),
        (
            lambda m: m(ids(2, 4), position_ids=torch.tensor([0, 1, 2, 12])),
            r"position_ids holds 12, outside \[0, max_position_embeddings 12\)",
        ),
        (
            lambda m: m(ids(2, 4), attention_mask=torch.ones(2, 5)),
            r"attention_mask is shape \(2, 5\), but input_ids has shape \(2, 4\)",
        ),
        (
            lambda m: m(ids(2, 4), token_type_ids=torch.zeros(4, 2, dtype=torch.long)),
            r"token_type_ids is shape \(4, 2\), but input_ids has shape \(2, 4\)",
        ),
        (lambda m: m(ids(2, 4), attention_mask=[[1, 1, 1, 1]] * 2), "attention_mask is a list"),
        (lambda m: m(ids(2, 4), position_ids=torch.arange(5)), r"position_ids is shape \(5,\); expected shape \(4,\)"),
        (lambda m: m(ids(4)), r"input_ids must be a \(batch, length\) tensor, got shape \(4,\)"),
        (lambda m: m([[1, 2, 3]]), r"input_ids must be a \(batch, length\) tensor, got a list"),
        (lambda m: m(torch.rand(2, 3)), "input_ids must be an integer tensor, got dtype torch.float32"),
        (lambda m: m(torch.zeros(2, 0, dtype=torch.long)), "input_ids has length 0"),
    ],
)
def test_bad_inputs(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_good_inputs_still_run(model):
    out = model(
        ids(2, 12),
        attention_mask=torch.ones(2, 12, dtype=torch.long),
        token_type_ids=torch.ones(2, 12, dtype=torch.long),
        position_ids=torch.arange(12)[None],
    )
    assert out.last_hidden_state.shape == (2, 12, 16)
    assert torch.isfinite(out.last_hidden_state).all()


def test_fully_padded_row_stays_finite(model):
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    for attentions in (False, True):
        out = model(ids(2, 3), attention_mask=mask, output_attentions=attentions)
        assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fully_padded_row_stays_finite_in_half_precision(model, dtype):
    half = BertModel(model.config).eval().to(dtype)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        for attentions in (False, True):
            out = half(ids(2, 4), attention_mask=mask, output_attentions=attentions)
            assert out.last_hidden_state.dtype == dtype
            assert torch.isfinite(out.last_hidden_state).all() and torch.isfinite(out.pooler_output).all()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
    )
    return BertModel(config).eval()


@pytest.mark.parametrize("value", [2, 0.5, -1, float("nan")])
def test_attention_mask_values_other_than_0_and_1_are_refused(tiny_model, value):
    ids = torch.tensor([[1, 2, 3, 4]])
    mask = torch.tensor([[1, 1, 1, value]], dtype=torch.float32 if isinstance(value, float) else torch.int64)
    with pytest.raises(ValueError, match=f"attention_mask holds {value!r}"):
        tiny_model(ids, attention_mask=mask)


def test_attention_mask_as_ints_bools_or_floats_gives_one_answer(tiny_model):
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    ints = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        want = tiny_model(ids, attention_mask=ints).last_hidden_state
        for mask in (ints.bool(), ints.float(), ints.int()):
            torch.testing.assert_close(tiny_model(ids, attention_mask=mask).last_hidden_state, want, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["token_type_ids", "position_ids"])
def test_float_ids_are_refused(tiny_model, name):
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=f"{name} must be an integer tensor, got dtype torch.float32"):
        tiny_model(ids, **{name: torch.zeros(1, 3)})
