"""Pretraining and task heads against transformers: logits, losses, every gradient, one AdamW step."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from reference import randomize_

import minibert.heads as heads
from minibert import Tokenizer, fill_mask
from minibert.formats.checkpoint import hf_name

FIXTURE_TF = str(Path(__file__).parent / "data" / "uncased_L-2_H-32_A-4")

# minibert class, its transformers counterpart, the output fields to compare, extra constructor kwargs
HEADS = [
    ("BertForMaskedLM", ["logits"], {}),
    ("BertForNextSentencePrediction", ["logits"], {}),
    ("BertForPreTraining", ["prediction_logits", "seq_relationship_logits"], {}),
    ("BertForSequenceClassification", ["logits"], {"num_labels": 3}),
    ("BertForSequenceClassification", ["logits"], {"num_labels": 1}),
    ("BertForTokenClassification", ["logits"], {"num_labels": 5}),
    ("BertForQuestionAnswering", ["start_logits", "end_logits"], {}),
]
TINY = [(2, 4, 32), (1, 2, 16)]  # layers, heads, hidden


def labels_for(name, kwargs, input_ids, mask, vocab):
    B, L = input_ids.shape
    g = torch.Generator().manual_seed(3)
    if name in ("BertForMaskedLM", "BertForPreTraining"):
        labels = torch.full((B, L), -100)
        chosen = torch.rand(B, L, generator=g) < 0.3
        chosen[:, 1] = True
        labels[chosen & mask.bool()] = input_ids[chosen & mask.bool()]
        out = {"labels": labels}
        if name == "BertForPreTraining":
            out["next_sentence_label"] = torch.randint(0, 2, (B,), generator=g)
        return out
    if name == "BertForNextSentencePrediction":
        return {"labels": torch.randint(0, 2, (B,), generator=g)}
    if name == "BertForSequenceClassification":
        if kwargs["num_labels"] == 1:
            return {"labels": torch.randn(B, generator=g)}
        return {"labels": torch.randint(0, kwargs["num_labels"], (B,), generator=g)}
    if name == "BertForTokenClassification":
        labels = torch.randint(0, kwargs["num_labels"], (B, L), generator=g)
        return {"labels": labels.masked_fill(mask == 0, -100)}
    return {"start_positions": torch.tensor([1, 3, L + 4])[:B], "end_positions": torch.tensor([2, 5, 1])[:B]}


def make_pair(tmp_path, name, kwargs, layers=2, n_heads=4, hidden=32, hf_config=None):
    """A random transformers model of class `name`, saved, and minibert's class loaded from it."""
    import transformers

    config = hf_config or transformers.BertConfig(
        vocab_size=99,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=n_heads,
        intermediate_size=37,
        max_position_embeddings=32,
        initializer_range=0.2,
        attn_implementation="eager",
    )
    if "num_labels" in kwargs:
        config.num_labels = kwargs["num_labels"]
    ref = getattr(transformers, name)(config).eval()
    randomize_(ref)
    ref.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may be newly initialised
        ours = getattr(heads, name).from_pretrained(tmp_path, **kwargs)
    return ours, ref


def batch(vocab=99, B=3, L=9):
    input_ids = torch.randint(1, vocab, (B, L))
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    token_type_ids = torch.zeros(B, L, dtype=torch.long)
    token_type_ids[:, 5:] = 1
    return dict(input_ids=input_ids * mask, attention_mask=mask, token_type_ids=token_type_ids * mask)


def compare(ours, ref, inputs, fields, atol=1e-5):
    o, r = ours(**inputs), ref(**inputs)
    for f in fields:
        torch.testing.assert_close(getattr(o, f), getattr(r, f), atol=atol, rtol=0, msg=lambda m, f=f: f"{f}: {m}")
    if "labels" in inputs or "start_positions" in inputs:
        torch.testing.assert_close(o.loss, r.loss, atol=atol, rtol=0)
    return o, r


def assert_grads_match(ours, ref):
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        q = ref_params[hf_name(name)]
        assert p.grad is not None and q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"grad {n}: {m}")
    assert len(list(ours.parameters())) == len(ref_params)


@pytest.mark.parametrize("layers,n_heads,hidden", TINY)
@pytest.mark.parametrize("name,fields,kwargs", HEADS)
def test_logits_loss_gradients_and_step(tmp_path, name, fields, kwargs, layers, n_heads, hidden):
    ours, ref = make_pair(tmp_path, name, kwargs, layers, n_heads, hidden)
    inputs = batch()
    with torch.no_grad():
        compare(ours, ref, inputs, fields)
    inputs.update(labels_for(name, kwargs, inputs["input_ids"], inputs["attention_mask"], 99))
    o, r = compare(ours, ref, inputs, fields)
    o.loss.backward()
    r.loss.backward()
    assert_grads_match(ours, ref)
    # One AdamW step with the same hyper-parameters leaves the same weights. Adam's first step is
    # lr * g / (|g| + eps), whose slope in g is lr / eps where |g| is small: with the default eps 1e-8,
    # gradients that differ by float rounding (the two attention kernels round differently; the key
    # bias's true gradient is exactly 0, so all it has is rounding) would move weights apart by ~lr.
    # eps = 1e-3 keeps that slope at lr / eps = 1, so equal gradients mean equal weights within 1e-6.
    lr = 1e-3
    for model in (ours, ref):
        torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-3, weight_decay=0.01).step()
    ref_params = dict(ref.named_parameters())
    for n, p in ours.named_parameters():
        torch.testing.assert_close(p, ref_params[hf_name(n)], atol=1e-6, rtol=0, msg=lambda m, n=n: f"{n}: {m}")


def test_bert_base_pretraining_gradients(bert_base):
    import transformers

    folder, _ = bert_base
    ours = heads.BertForPreTraining.from_pretrained(folder)
    ref = transformers.BertForPreTraining.from_pretrained(folder, attn_implementation="eager").eval()
    inputs = batch(vocab=30522, B=3, L=12)
    inputs.update(labels_for("BertForPreTraining", {}, inputs["input_ids"], inputs["attention_mask"], 30522))
    o, r = compare(ours, ref, inputs, ["prediction_logits", "seq_relationship_logits"])
    o.loss.backward()
    r.loss.backward()
    assert_grads_match(ours, ref)


def test_bert_base_heads_from_pretraining_checkpoint(bert_base):
    folder, _ = bert_base
    with pytest.warns(UserWarning, match=r"newly initialised: qa_outputs\.weight, qa_outputs\.bias$"):
        qa = heads.BertForQuestionAnswering.from_pretrained(folder)
    assert qa.newly_initialized == ["qa_outputs.weight", "qa_outputs.bias"]


def test_missing_head_reports_exactly_the_missing_keys(tmp_path):
    ours, ref = make_pair(tmp_path / "encoder", "BertForMaskedLM", {})
    # a MaskedLM checkpoint has no pooler and no next-sentence head
    with pytest.warns(UserWarning) as record:
        model = heads.BertForPreTraining.from_pretrained(tmp_path / "encoder")
    assert model.newly_initialized == [
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
        "cls.seq_relationship.weight",
        "cls.seq_relationship.bias",
    ]
    assert (
        "bert.pooler.dense.weight, bert.pooler.dense.bias, cls.seq_relationship.weight, "
        "cls.seq_relationship.bias" in str(record[0].message)
    )
    # the encoder and the masked-LM head did load
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).prediction_logits, ref(**inputs).logits, atol=1e-5, rtol=0)


def test_classifier_with_other_label_count_is_an_error(tmp_path):
    make_pair(tmp_path, "BertForSequenceClassification", {"num_labels": 3})
    assert heads.BertForSequenceClassification.from_pretrained(tmp_path).num_labels == 3  # from the checkpoint
    with pytest.raises(
        ValueError,
        match=r"'classifier\.weight' has shape \(3, 32\), but "
        r"BertForSequenceClassification expects \(5, 32\)",
    ):
        heads.BertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


@pytest.mark.parametrize("name,fields,kwargs", HEADS)
def test_save_pretrained_loads_in_transformers(tmp_path, name, fields, kwargs):
    import transformers

    ours, ref = make_pair(tmp_path / "a", name, kwargs)
    ours.save_pretrained(tmp_path / "b")
    loaded, info = getattr(transformers, name).from_pretrained(
        tmp_path / "b", output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    inputs = batch()
    with torch.no_grad():
        compare(ours, loaded.eval(), inputs, fields)


def test_training_mode_dropout_and_tied_decoder(tmp_path):
    ours, _ = make_pair(tmp_path, "BertForMaskedLM", {})
    inputs = batch()
    inputs["labels"] = inputs["input_ids"].clone()
    ours.train()
    with torch.no_grad():
        a, b = ours(**inputs).logits, ours(**inputs).logits
    assert (a - b).abs().max() > 1e-4  # dropout is on
    ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, ours(**inputs).logits, atol=0, rtol=0)
    # the output projection is the word-embedding table itself, before and after an optimiser step
    vocab_sized = [n for n, p in ours.named_parameters() if p.shape == (99, 32)]
    assert vocab_sized == ["bert.embeddings.word_embeddings.weight"]
    ours.train()
    loss = ours(**inputs).loss
    loss.backward()
    for n, p in ours.named_parameters():  # gradients reach every parameter
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    torch.optim.AdamW(ours.parameters(), lr=1e-2).step()
    ours.eval()
    with torch.no_grad():
        h = ours.bert(**{k: v for k, v in inputs.items() if k != "labels"}).last_hidden_state
        expected = ours.mlm(h, ours.bert.embeddings.word_embeddings.weight)
        torch.testing.assert_close(ours(**inputs).logits, expected, atol=0, rtol=0)


def test_fill_mask_matches_transformers(tmp_path):
    import transformers

    ours = heads.BertForPreTraining.from_pretrained(FIXTURE_TF)
    tokenizer = Tokenizer.from_pretrained(FIXTURE_TF)
    ours.save_pretrained(tmp_path)
    ref = transformers.BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    text = "the [MASK] is good and [MASK] model"
    got = fill_mask(ours, tokenizer, text, top_k=4)
    assert len(got) == 2 and all(len(c) == 4 for c in got)
    inputs = tokenizer([text])
    with torch.no_grad():
        probs = ref(**inputs).logits[0].softmax(-1)
    for candidates, position in zip(got, (inputs["input_ids"][0] == 9).nonzero().flatten().tolist()):
        scores, ids = probs[position].topk(4)
        assert [c["id"] for c in candidates] == ids.tolist()
        torch.testing.assert_close(torch.tensor([c["score"] for c in candidates]), scores, atol=1e-6, rtol=0)
        assert [c["token"] for c in candidates] == tokenizer.convert_ids_to_tokens(ids)
    with pytest.raises(ValueError, match="no \\[MASK\\] token"):
        fill_mask(ours, tokenizer, "no mask here")


def test_fill_mask_command(minilm_dir):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "minibert", "fill-mask", *args], capture_output=True, text=True, timeout=120
        )

    result = run("--model", FIXTURE_TF, "--top-k", "3", "the [MASK] is good")
    assert result.returncode == 0, result.stderr
    ours = heads.BertForPreTraining.from_pretrained(FIXTURE_TF)
    expected = fill_mask(ours, Tokenizer.from_pretrained(FIXTURE_TF), "the [MASK] is good", top_k=3)
    assert [line.split() for line in result.stdout.splitlines()] == [
        [c["token"], f"{c['score']:.4f}"] for c in expected
    ]
    for args, message in [
        (("--model", FIXTURE_TF, "no mask"), "exactly one [MASK], it holds 0"),
        (("--model", FIXTURE_TF, "[MASK] and [MASK]"), "exactly one [MASK], it holds 2"),
        (("--model", str(minilm_dir), "a [MASK]"), "has no masked-language-model head"),
    ]:
        result = run(*args)
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
