"""Cross-encoders and classifiers on the engine, against sentence-transformers' CrossEncoder and transformers'
BertForSequenceClassification, on checkpoints with random weights saved in their real layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from checkpoints import small_bert

from minibert.classify import Classifier, CrossEncoder

QUERY = "how do rivers shape the towns along them"
DOCUMENTS = [
    "Rivers carry trade and water to the towns built on their banks.",
    "The recipe needs two eggs and a cup of flour.",
    "Many old towns grew where a river could be crossed.",
    "word " * 600,  # longer than the model's 512 tokens: the document is cut, not the query
    "",
]


def test_scores_and_ranking_equal_sentence_transformers(cross_encoder_dir):
    from sentence_transformers import CrossEncoder as Reference

    reference = Reference(str(cross_encoder_dir), device="cpu")
    ours = CrossEncoder.from_pretrained(cross_encoder_dir)
    pairs = [(QUERY, d) for d in DOCUMENTS]
    want = reference.predict(pairs)
    with pytest.warns(UserWarning, match="1 of 5 texts were longer than 512 tokens"):
        got = ours.predict(pairs)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    ranked = ours.rank(QUERY, DOCUMENTS, top_k=3, return_documents=True)
    expected = reference.rank(QUERY, DOCUMENTS, top_k=3, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in expected]
    assert [r["text"] for r in ranked] == [DOCUMENTS[r["corpus_id"]] for r in ranked]
    np.testing.assert_allclose([r["score"] for r in ranked], [r["score"] for r in expected], atol=1e-5)


def test_a_pairs_score_does_not_depend_on_its_neighbours(cross_encoder_dir):
    ours = CrossEncoder.from_pretrained(cross_encoder_dir)
    together = ours.predict([(QUERY, d) for d in DOCUMENTS[:3] + DOCUMENTS[4:]])
    alone = np.array([ours.predict((QUERY, d)) for d in DOCUMENTS[:3] + DOCUMENTS[4:]])
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)


def test_the_checkpoints_activation_is_applied(cross_encoder_dir, tmp_path):
    """sentence-transformers 6 records it in config_sentence_transformers.json, 4 and 5 in config.json."""
    st_file = cross_encoder_dir / "config_sentence_transformers.json"
    assert json.loads(st_file.read_text())["activation_fn"] == "torch.nn.modules.linear.Identity"
    raw = CrossEncoder.from_pretrained(cross_encoder_dir).predict([(QUERY, DOCUMENTS[0])])
    shutil.copytree(cross_encoder_dir, tmp_path / "v5")
    (tmp_path / "v5" / "config_sentence_transformers.json").unlink()
    config = json.loads((tmp_path / "v5" / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    (tmp_path / "v5" / "config.json").write_text(json.dumps(config))
    sigmoid = CrossEncoder.from_pretrained(tmp_path / "v5").predict([(QUERY, DOCUMENTS[0])])
    np.testing.assert_allclose(sigmoid, 1 / (1 + np.exp(-raw)), atol=1e-6)
    config["sentence_transformers"] = {"activation_fn": "os.system"}
    (tmp_path / "v5" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="activation 'os.system' is not one minibert knows"):
        CrossEncoder.from_pretrained(tmp_path / "v5")


def test_bad_input_is_named(cross_encoder_dir, minilm_dir):
    ours = CrossEncoder.from_pretrained(cross_encoder_dir)
    with pytest.raises(TypeError, match=r"pairs\[1\] must be a \(query, document\) pair of strings"):
        ours.predict([(QUERY, "a"), (QUERY,)])
    with pytest.raises(ValueError, match="rank needs at least one document"):
        ours.rank(QUERY, [])
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        ours.rank(QUERY, DOCUMENTS, top_k=0)
    with pytest.raises(ValueError, match="has no sequence-classification weights"):
        CrossEncoder.from_pretrained(minilm_dir)  # an embedding model, not a cross-encoder


def test_a_multi_label_classifier_labels_as_transformers_scores(minilm_dir, tmp_path):
    labels = {0: "rivers", 1: "cooking", 2: "towns"}
    folder, reference = small_bert(
        minilm_dir,
        tmp_path,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        problem_type="multi_label_classification",
    )
    texts = DOCUMENTS[:3]
    batch = {k: torch.tensor(v) for k, v in reference_tokens(folder, texts).items()}
    with torch.no_grad():
        want = torch.sigmoid(reference(**batch).logits).numpy()
    got = Classifier.from_pretrained(folder).predict(texts, top_k=None)
    for row, ours in zip(want, got):
        assert [o["label"] for o in ours] == [labels[i] for i in np.argsort(-row)]
        np.testing.assert_allclose([o["score"] for o in ours], np.sort(row)[::-1], atol=1e-6)


def reference_tokens(folder, texts):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="np")


def test_rerank_and_classify_on_the_command_line(cross_encoder_dir, minilm_dir, tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minibert", *map(str, args)], capture_output=True, timeout=300)

    expected = CrossEncoder.from_pretrained(cross_encoder_dir).rank(QUERY, DOCUMENTS[:3])
    done = run("rerank", "--model", cross_encoder_dir, QUERY, *DOCUMENTS[:3], "--json")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in expected]
    assert [r["text"] for r in got] == [DOCUMENTS[r["corpus_id"]] for r in expected]
    (tmp_path / "docs.txt").write_text("\n".join(DOCUMENTS[:3]) + "\n")
    table = run("rerank", "--model", cross_encoder_dir, QUERY, "--documents", tmp_path / "docs.txt", "--top-k", 2)
    lines = table.stdout.decode().splitlines()
    assert table.returncode == 0 and len(lines) == 3 and lines[1].split()[:1] == ["1"]
    assert lines[1].split()[2] == str(expected[0]["corpus_id"])
    refused = run("rerank", "--model", cross_encoder_dir, QUERY)
    assert refused.returncode == 2 and b"give documents after the query, or --documents FILE" in refused.stderr
    labels = {0: "rivers", 1: "cooking"}
    folder, _ = small_bert(
        minilm_dir, tmp_path / "c", num_labels=2, id2label=labels, label2id={"rivers": 0, "cooking": 1}
    )
    done = run("classify", "--model", folder, "--top-k", "0", "--json", DOCUMENTS[0], DOCUMENTS[1])
    assert done.returncode == 0, done.stderr
    want = Classifier.from_pretrained(folder).predict(DOCUMENTS[:2], top_k=None)
    got = json.loads(done.stdout)
    assert [[p["label"] for p in row] for row in got] == [[p["label"] for p in row] for row in want]
    np.testing.assert_allclose(
        [[p["score"] for p in row] for row in got], [[p["score"] for p in row] for row in want], atol=1e-6
    )


def test_int8_scores_stay_near_float32_and_int8_needs_float32_on_cpu(cross_encoder_dir):
    from minibert.fast.quantize import Int8Linear

    pairs = [(QUERY, d) for d in DOCUMENTS]
    plain = CrossEncoder.from_pretrained(cross_encoder_dir).predict(pairs)
    int8 = CrossEncoder.from_pretrained(cross_encoder_dir, quantize="int8")
    assert sum(isinstance(m, Int8Linear) for m in int8.encoder.model.modules()) == 2 * 6  # 2 layers' six linears
    assert np.abs(int8.predict(pairs) - plain).max() < 1e-3
    with pytest.raises(ValueError, match="quantize='int8' runs on CPU in float32"):
        CrossEncoder.from_pretrained(cross_encoder_dir, quantize="int8", dtype="bfloat16")
