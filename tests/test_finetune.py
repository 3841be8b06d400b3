"""scripts/finetune_classifier.py: one tiny epoch on a handful of rows lowers the loss on them."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

from minibert import BertForSequenceClassification, Tokenizer

SCRIPT = Path(__file__).parents[1] / "scripts" / "finetune_classifier.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("finetune_classifier", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode,lr", [("full", 1e-4), ("frozen", 1e-2)])
def test_one_tiny_epoch_lowers_the_loss(script, minilm_dir, mode, lr):
    texts, labels = script.read_tsv(script.DATA / "sentiment_train.tsv")
    texts, labels = texts[:8], labels[:8]
    assert set(labels) == {0, 1}
    tokenizer = Tokenizer.from_pretrained(minilm_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = BertForSequenceClassification.from_pretrained(minilm_dir, num_labels=2)
    before, _, _ = script.evaluate(model, tokenizer, texts, labels)
    frozen = {n: p.detach().clone() for n, p in model.bert.named_parameters()}
    history = script.train(
        model, tokenizer, texts, labels, mode=mode, epochs=1, lr=lr, batch_size=4, seed=0, progress=False
    )
    after, _, _ = script.evaluate(model, tokenizer, texts, labels)
    assert len(history) == 1
    assert after < before - 0.01, (before, after)
    changed = any((p != frozen[n]).any() for n, p in model.bert.named_parameters())
    assert changed == (mode == "full")


def test_data_files():
    for name, size in (("sentiment_train.tsv", 346), ("sentiment_test.tsv", 86)):
        lines = (SCRIPT.parent / "data" / name).read_text(encoding="utf-8").splitlines()
        assert lines[0] == "label\ttext" and len(lines) - 1 == size
        assert {line.split("\t")[0] for line in lines[1:]} == {"0", "1"}


def test_run_leaves_nothing_in_the_temporary_folder_unless_asked(script, minilm_dir, tmp_path, monkeypatch):
    import argparse
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    args = argparse.Namespace(model=str(minilm_dir), epochs=1, lr=1e-2, batch_size=64, seed=0, output_dir=None)
    accuracy = script.run("frozen", args)
    assert 0.0 <= accuracy <= 1.0
    assert [p.name for p in scratch.iterdir() if p.name.startswith("minibert-")] == []  # the saved model is gone
    args.output_dir = str(tmp_path / "runs")
    script.run("frozen", args)
    assert sorted(p.name for p in (tmp_path / "runs" / "frozen").iterdir()) == ["config.json", "model.safetensors"]
