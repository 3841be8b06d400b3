"""Retrieval in the library, against sentence-transformers: its `encode` keywords (prompts, token vectors,
truncate_dim, normalize_embeddings, precision, convert_to_tensor) and util.semantic_search, over arrays
and over a folder of shards read a chunk at a time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from minibert import Encoder
from minibert.search import semantic_search

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "what is the capital of france " * 60,  # past the 256-token limit, prompt included
]


@pytest.fixture(scope="module")
def prompted(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 with e5-style prompts in its sentence-transformers config, "query" the default."""
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(minilm_dir, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config |= {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def reference(prompted):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(prompted), device="cpu")


@pytest.fixture(scope="module")
def encoder(prompted):
    return Encoder.from_pretrained(prompted)


def test_prompts_as_sentence_transformers_applies_and_counts_them(encoder, reference):
    for kwargs in ({}, {"prompt_name": "passage"}, {"prompt": "Represent this: "}):
        want = reference.encode(TEXTS, **kwargs)
        with pytest.warns(UserWarning, match="1 of 7 texts were longer than 256 tokens"):
            got = encoder.encode(TEXTS, **kwargs)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0, err_msg=str(kwargs))
    plain = encoder.encode(TEXTS[:2], prompt="")
    assert not np.allclose(plain, encoder.encode(TEXTS[:2]), atol=1e-3)  # the default prompt is there
    with pytest.raises(ValueError, match="no prompt named 'doc'; this model's prompts: passage, query"):
        encoder.encode("x", prompt_name="doc")


def test_sentence_transformers_encode_keywords(encoder, reference):
    texts = TEXTS[:6]
    for kwargs in (
        {"normalize_embeddings": True},
        {"truncate_dim": 128},
        {"truncate_dim": 128, "normalize_embeddings": True},
        {"precision": "binary"},
        {"precision": "ubinary"},
    ):
        want, got = reference.encode(texts, **kwargs), encoder.encode(texts, **kwargs)
        assert got.dtype == want.dtype and got.shape == want.shape, kwargs
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=1e-5, rtol=0)
    for precision in ("int8", "uint8"):  # ranges from the call's own vectors: a level may differ by rounding
        want, got = reference.encode(texts, precision=precision), encoder.encode(texts, precision=precision)
        assert got.dtype == want.dtype and np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert (got == want).mean() > 0.99
    tensor = encoder.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), reference.encode(texts, convert_to_tensor=True).numpy(), atol=1e-5)
    tokens, want = (
        encoder.encode(texts, output_value="token_embeddings"),
        reference.encode(texts, output_value="token_embeddings"),
    )
    assert [t.shape for t in tokens] == [tuple(w.shape) for w in want]
    for t, w in zip(tokens, want):
        np.testing.assert_allclose(t, w.numpy(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="truncate_dim must be an integer from 1 to the model's 384"):
        encoder.encode(texts, truncate_dim=500)
    with pytest.raises(ValueError, match="takes its ranges from the call's vectors: give two texts or more"):
        encoder.encode("one", precision="int8")


def test_similarity_as_a_method(encoder, reference):
    a, b = encoder.encode(TEXTS[:3]), encoder.encode(TEXTS[3:6])
    np.testing.assert_allclose(encoder.similarity(a, b), reference.similarity(a, b).numpy(), atol=1e-6)


def test_semantic_search_gives_sentence_transformers_hits(tmp_path):
    from sentence_transformers import util

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(1000, 48)).astype(np.float32)
    queries = rng.normal(size=(5, 48)).astype(np.float32)
    want = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=10)
    for chunk_rows in (100_000, 7):  # one chunk, and many
        got = semantic_search(queries, corpus, top_k=10, chunk_rows=chunk_rows)
        assert [[h["corpus_id"] for h in q] for q in got] == [[h["corpus_id"] for h in q] for q in want]
        np.testing.assert_allclose(
            [[h["score"] for h in q] for q in got], [[h["score"] for h in q] for q in want], atol=1e-6
        )
    dot = util.semantic_search(
        torch.from_numpy(queries), torch.from_numpy(corpus), top_k=3, score_function=util.dot_score
    )
    got = semantic_search(queries, corpus, top_k=3, score="dot")
    assert [[h["corpus_id"] for h in q] for q in got] == [[h["corpus_id"] for h in q] for q in dot]


def test_semantic_search_over_a_folder_of_shards_read_a_chunk_at_a_time(tmp_path, minilm_dir):
    import subprocess
    import sys

    from sentence_transformers import util

    from minibert import read_vectors

    texts = [f"document number {i} about {w}" for i, w in enumerate(["rivers", "towns", "music", "markets"] * 30)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "minibert",
            "embed",
            str(tmp_path / "in.txt"),
            "-o",
            f"{tmp_path / 'v'}/",
            "--chunk-size",
            "32",
        ],
        capture_output=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    vectors = read_vectors(tmp_path / "v")
    assert len(read_vectors(tmp_path / "v").manifest["shards"]) == 4
    queries = Encoder.from_pretrained(minilm_dir).encode(["music in a town", "a market by the river"])
    got = semantic_search(queries, vectors, top_k=5, chunk_rows=10)  # 12 chunks across 4 shards
    want = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(np.asarray(vectors)), top_k=5)
    assert [[h["corpus_id"] for h in q] for q in got] == [[h["corpus_id"] for h in q] for q in want]


def test_search_a_vectors_folder_from_the_command_line(tmp_path, minilm_dir):
    import subprocess
    import sys

    texts = ["The river floods the lower town every spring.", "A recipe for bread.", "Music played all night."]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "minibert", *map(str, args)], capture_output=True, timeout=300)

    assert run("embed", tmp_path / "corpus.txt", "-o", f"{tmp_path / 'v'}/").returncode == 0
    done = run("search", f"{tmp_path / 'v'}/", "when does the river flood", "--top-k", 2, "--json")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    encoder = Encoder.from_pretrained(minilm_dir)
    want = semantic_search(encoder.encode(["when does the river flood"]), encoder.encode(texts), top_k=2)[0]
    assert [h["row"] for h in hits] == [h["corpus_id"] for h in want]
    assert hits[0]["text"] == texts[0] and hits[0]["id"] == 0  # a text file's ids are its line numbers, from 0
    np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in want], atol=1e-5)
    (tmp_path / "corpus.txt").write_text("changed\n")  # the texts cannot be shown from a changed input
    table = run("search", f"{tmp_path / 'v'}/", "when does the river flood", "--top-k", 1)
    assert table.returncode == 0 and b"ids only" in table.stderr
