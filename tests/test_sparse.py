"""SPLADE sparse vectors on the engine, against sentence-transformers' SparseEncoder (MLMTransformer and
SpladePooling) on a masked-LM checkpoint with random weights and MiniLM's real tokenizer."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from minibert.sparse import SparseEncoder

TEXTS = ["a river runs past the old mill", "The town meets at night.", "", "word " * 300]


def test_sparse_vectors_equal_sentence_transformers(splade_dir):
    from sentence_transformers.sparse_encoder import SparseEncoder as Reference

    want = Reference(str(splade_dir), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    ours = SparseEncoder.from_pretrained(splade_dir)
    with pytest.warns(UserWarning, match="1 of 4 texts were longer than 128 tokens"):
        dense = ours.dense(TEXTS)
    np.testing.assert_allclose(dense, want, atol=1e-5, rtol=0)
    with pytest.warns(UserWarning):
        rows = ours.encode(TEXTS, top_k=50)
    for (indices, values), reference in zip(rows, want):
        top = np.argsort(-reference, kind="stable")[:50]
        assert list(indices) == list(top[reference[top] > 0])
        np.testing.assert_allclose(values, reference[indices], atol=1e-5, rtol=0)
        assert (np.diff(values) <= 0).all()  # largest first
    tokens = ours.decode(rows[0][0][:3], rows[0][1][:3])
    assert [t for t, _ in tokens] == ours.tokenizer.convert_ids_to_tokens(rows[0][0][:3])


def test_a_texts_sparse_vector_does_not_depend_on_its_neighbours(splade_dir):
    ours = SparseEncoder.from_pretrained(splade_dir)
    together = ours.dense(TEXTS[:3])
    alone = np.stack([ours.dense([t])[0] for t in TEXTS[:3]])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


def test_what_minibert_does_not_compute_is_refused(splade_dir, tmp_path, minilm_dir):
    import json

    shutil.copytree(splade_dir, tmp_path / "sum")
    pooling = [m for m in json.loads((tmp_path / "sum" / "modules.json").read_text()) if "Splade" in m["type"]][0]
    config_file = tmp_path / "sum" / pooling["path"] / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "pooling_strategy": "sum"}))
    with pytest.raises(ValueError, match="SPLADE pooling 'sum' over 'relu' is not supported"):
        SparseEncoder.from_pretrained(tmp_path / "sum")
    with pytest.raises(ValueError, match="minibert's SparseEncoder is MLMTransformer then SpladePooling"):
        SparseEncoder.from_pretrained(minilm_dir)  # a dense sentence-transformers model


def test_embed_sparse_on_the_command_line(splade_dir, tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:3]) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "minibert", "embed", "--sparse", "--model", str(splade_dir), "--top-k", "20",
         str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.jsonl")],
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    want = SparseEncoder.from_pretrained(splade_dir).encode(TEXTS[:3], top_k=20)
    assert [r["indices"] for r in rows] == [list(map(int, i)) for i, _ in want]
    np.testing.assert_allclose(
        np.concatenate([r["values"] for r in rows]), np.concatenate([v for _, v in want]), atol=1e-5
    )
