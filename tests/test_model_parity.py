"""minibert.BertModel against transformers.BertModel (eager attention), float32 on CPU, atol 1e-5."""

from __future__ import annotations

import pytest
import torch
from reference import assert_both_paths_match, assert_outputs_match, randomize_

from minibert import BertModel, Tokenizer

TINY_GRID = [
    # layers, heads, hidden
    (1, 1, 8),
    (2, 4, 32),
    (3, 2, 24),
    (2, 8, 64),
]


def tiny_reference(tmp_path, layers, heads, hidden, **overrides):
    import transformers

    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=3,
        initializer_range=0.2,
        attn_implementation="eager",
        **overrides,
    )
    ref = transformers.BertModel(config).eval()
    randomize_(ref)
    ref.save_pretrained(tmp_path)
    return ref


def padded_batch(vocab=99, types=3, lengths=(13, 7, 1, 10), max_len=13):
    B = len(lengths)
    input_ids = torch.randint(1, vocab, (B, max_len))
    attention_mask = (torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]).long()
    input_ids = input_ids * attention_mask  # pad id 0 after each sequence
    token_type_ids = torch.randint(0, types, (B, max_len)) * attention_mask
    return input_ids, attention_mask, token_type_ids


@pytest.mark.parametrize("layers,heads,hidden", TINY_GRID)
@pytest.mark.parametrize("with_positions", [False, True])
def test_tiny_random_configs(tmp_path, layers, heads, hidden, with_positions):
    ref = tiny_reference(tmp_path, layers, heads, hidden)
    model = BertModel.from_pretrained(tmp_path)
    input_ids, attention_mask, token_type_ids = padded_batch()
    position_ids = torch.randint(0, 40, input_ids.shape) if with_positions else None
    kwargs = dict(
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        position_ids=position_ids,
        output_hidden_states=True,
        output_attentions=True,
    )
    with torch.no_grad():
        expected = ref(input_ids, **kwargs)
        assert_outputs_match(model(input_ids, **kwargs), expected, attention_mask)
        # The fused scaled_dot_product_attention path (no attention maps asked for) must agree too.
        kwargs["output_attentions"] = False
        assert_outputs_match(model(input_ids, **kwargs), expected, attention_mask, attentions=False)


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_other_activations(tmp_path, act):
    ref = tiny_reference(tmp_path, 2, 4, 32, hidden_act=act)
    model = BertModel.from_pretrained(tmp_path)
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        assert_outputs_match(
            model(input_ids, attention_mask, token_type_ids, output_attentions=True),
            ref(input_ids, attention_mask, token_type_ids, output_attentions=True),
            attention_mask,
        )


def test_defaults_mean_all_ones_mask_and_segment_zero(tmp_path):
    tiny_reference(tmp_path, 2, 4, 32)
    model = BertModel.from_pretrained(tmp_path)
    input_ids = torch.randint(1, 99, (3, 9))
    with torch.no_grad():
        implicit = model(input_ids, output_hidden_states=True)
        explicit = model(
            input_ids,
            torch.ones_like(input_ids),
            torch.zeros_like(input_ids),
            torch.arange(9),
            output_hidden_states=True,
        )
    assert_outputs_match(implicit, explicit, atol=1e-6)


def test_sdpa_and_explicit_attention_agree(tmp_path):
    tiny_reference(tmp_path, 3, 4, 32)
    model = BertModel.from_pretrained(tmp_path)
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        fused = model(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
        explicit = model(input_ids, attention_mask, token_type_ids, output_hidden_states=True, output_attentions=True)
    assert fused.attentions is None and explicit.attentions is not None
    assert_outputs_match(fused, explicit, attention_mask, attentions=False)


def test_output_shapes_and_optional_fields(tmp_path):
    tiny_reference(tmp_path, 3, 4, 32)
    model = BertModel.from_pretrained(tmp_path)
    input_ids = torch.randint(1, 99, (2, 5))
    out = model(input_ids)
    assert out.last_hidden_state.shape == (2, 5, 32) and out.pooler_output.shape == (2, 32)
    assert out.hidden_states is None and out.attentions is None
    out = model(input_ids, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 4 and len(out.attentions) == 3
    assert out.attentions[0].shape == (2, 4, 5, 5)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 5))
    assert out.hidden_states[-1] is out.last_hidden_state


def test_dropout_is_active_in_train_mode_only(tmp_path):
    tiny_reference(tmp_path, 2, 4, 32)
    model = BertModel.from_pretrained(tmp_path)
    assert not model.training
    input_ids = torch.randint(1, 99, (2, 6))
    with torch.no_grad():
        first, second = model(input_ids).last_hidden_state, model(input_ids).last_hidden_state
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        model.train()
        a, b = model(input_ids).last_hidden_state, model(input_ids).last_hidden_state
    assert (a - b).abs().max() > 1e-3


def test_bert_base_from_pretraining_checkpoint(bert_base):
    folder, ref = bert_base
    model = BertModel.from_pretrained(folder)
    input_ids, attention_mask, token_type_ids = padded_batch(vocab=30522, types=2, lengths=(24, 11), max_len=24)
    kwargs = dict(
        attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=True, output_attentions=True
    )
    with torch.no_grad():
        assert_outputs_match(model(input_ids, **kwargs), ref(input_ids, **kwargs), attention_mask)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT reads a sentence in both directions at once.",
    "Short one.",
    "Café au lait, naïve façade; déjà vu!",
    "春眠不觉晓，处处闻啼鸟。",
    "",
]


def test_minilm_real_weights(minilm_dir, hf_minilm):
    model = BertModel.from_pretrained(minilm_dir)
    batch = Tokenizer.from_pretrained(minilm_dir)(SENTENCES)
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]  # padding present
    assert_both_paths_match(model, hf_minilm, batch)


def test_minilm_sentence_pairs(minilm_dir, hf_minilm):
    model = BertModel.from_pretrained(minilm_dir)
    batch = Tokenizer.from_pretrained(minilm_dir)(SENTENCES[:3], SENTENCES[3:])
    assert batch["token_type_ids"].max() == 1
    with torch.no_grad():
        assert_outputs_match(model(**batch), hf_minilm(**batch), batch["attention_mask"])


def test_bert_base_as_legacy_pytorch_bin(bert_base, tmp_path):
    from safetensors.torch import load_file

    folder, ref = bert_base
    state = load_file(folder / "model.safetensors")
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in state.items()
    }
    assert any(k.endswith("LayerNorm.gamma") for k in legacy)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    model = BertModel.from_pretrained(tmp_path)
    input_ids, attention_mask, token_type_ids = padded_batch(vocab=30522, types=2, lengths=(16, 5), max_len=16)
    with torch.no_grad():
        assert_outputs_match(
            model(input_ids, attention_mask, token_type_ids, output_hidden_states=True),
            ref(input_ids, attention_mask, token_type_ids, output_hidden_states=True),
            attention_mask,
        )


def test_eager_setting_is_the_reference_bit_for_bit(minilm_dir, hf_minilm):
    """attention="eager" runs attention()'s equations on an ordinary forward: 0 difference from transformers'
    eager attention on every output, with or without the attention maps."""
    model = BertModel.from_pretrained(minilm_dir, attention="eager")
    batch = Tokenizer.from_pretrained(minilm_dir)(["A man is eating food.", "Someone rides a red bicycle up the hill."])
    with torch.no_grad():
        expected = hf_minilm(**batch, output_hidden_states=True)
        ours = model(**batch, output_hidden_states=True)
    assert ours.attentions is None
    assert_outputs_match(ours, expected, batch["attention_mask"], atol=0)
    with pytest.raises(ValueError, match="attention implementation must be 'sdpa' or 'eager', got 'flash'"):
        BertModel.from_pretrained(minilm_dir, attention="flash")
