"""The engine (minibert/engine/), the one owner of texts -> vectors: its pooling table and normalisation on
both backends against plainly written references, its options, and the same vectors from every entry
point that calls it."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from minibert import Encoder, NumpyEncoder
from minibert.engine.core import InputTooLong, TokenIds
from minibert.engine.options import EmbedOptions
from minibert.engine.pooling import POOLINGS, l2_normalize, pool

PACKAGE = Path(__file__).parents[1] / "minibert"
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "短い", "", "The girl is carrying a baby."]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


def reference_pool(h, mask, pooling, pooler):
    """Each mode written out one text at a time, over its real tokens only."""
    out = []
    for b in range(h.shape[0]):
        real = h[b][mask[b].astype(bool)]
        out.append(
            {
                "mean": real.mean(0),
                "mean_sqrt_len": real.sum(0) / np.sqrt(len(real)),
                "max": real.max(0),
                "cls": h[b, 0],
                "pooler": pooler[b],
                "splade": np.log1p(np.maximum(real, 0)).max(0),
            }[pooling]
        )
    return np.stack(out)


@pytest.mark.parametrize("pooling", list(POOLINGS))
def test_each_pooling_is_one_function_for_both_backends(pooling):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 7, 5)).astype(np.float32) * 10
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    h[1, 4:] = 1e4  # padding holds large values: pooling must not see them
    pooler = rng.normal(size=(3, 5)).astype(np.float32)
    want = reference_pool(h, mask, pooling, pooler)
    m = mask[:, :, None].astype(np.float32)
    got_np = pool(np, h, m, pooling, pooler)
    got_torch = pool(torch, torch.from_numpy(h), torch.from_numpy(m), pooling, torch.from_numpy(pooler)).numpy()
    np.testing.assert_allclose(got_np, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got_torch, want, rtol=1e-6, atol=1e-5)


def test_l2_normalisation_for_both_backends():
    v = np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]], np.float32)
    want = np.array([[0.6, 0.8], [0.0, 0.0], [1e-8, 0.0]], np.float32)  # a zero row stays zero, not NaN
    np.testing.assert_allclose(l2_normalize(np, v), want, rtol=1e-6)
    np.testing.assert_allclose(l2_normalize(torch, torch.from_numpy(v)).numpy(), want, rtol=1e-6)


def test_the_pooling_modes_and_the_normalisation_have_one_home():
    """No module but the engine's pooling table writes a pooling mode or an L2 normalisation."""
    writers = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        if path.name == "pooling.py":
            continue
        if re.search(r"F\.normalize\(|linalg\.norm\(.*axis=1|\.sum\(1\) / .*mask|masked_fill\(.*finfo", source):
            writers.append(str(path.relative_to(PACKAGE)))
    assert writers == []


def test_options_are_checked_once_when_made():
    for bad, message in (
        ({"pooling": "avg"}, "unknown pooling 'avg'"),
        ({"normalize": 1}, "normalize must be True or False"),
        ({"truncation_side": "middle"}, "truncation_side must be right or left"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"prompt": None}, "prompt must be a string"),
    ):
        with pytest.raises(ValueError, match=message):
            EmbedOptions(**bad)


def test_truncation_on_either_side_and_refused(encoder):
    engine = encoder.engine
    long = " ".join(f"w{i}" for i in range(400))
    whole = encoder.tokenizer.encode([long], truncation=False)[0].ids
    right, cut = engine.tokenize([long], engine.options(max_length=16))
    assert cut == 1 and right[0].ids == whole[:15] + whole[-1:]
    left, _ = engine.tokenize([long], engine.options(max_length=16, truncation_side="left"))
    assert left[0].ids == whole[:1] + whole[-15:]
    with pytest.raises(InputTooLong, match="input 1 is longer than the model's 16 tokens"):
        engine.tokenize(["short", long], engine.options(max_length=16, truncate=False))
    exact = whole[1:15]  # 14 wordpieces + [CLS] and [SEP]: exactly the limit, not cut
    ids, cut = engine.tokenize([exact], engine.options(max_length=16))
    assert cut == 0 and ids[0].ids == whole[:15] + whole[-1:]


def test_the_same_vectors_from_every_entry_point(encoder, minilm_dir, tmp_path):
    expected = encoder.encode(TEXTS)
    engine = encoder.engine
    got = {
        "engine.encode": engine.encode(TEXTS, engine.options())[0],
        "encode_stream": np.concatenate([v for _, v in encoder.encode_stream(iter(TEXTS), chunk_size=2)]),
        "numpy backend": NumpyEncoder.from_pretrained(minilm_dir).encode(TEXTS),
    }

    # the corpus runner
    from minibert.corpus.embed import embed_folder
    from minibert.corpus.shards import Source, read_vectors

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    embed_folder(encoder, Source(str(source), "jsonl", "text", None, "strict"), tmp_path / "v", minilm_dir)
    got["corpus runner"] = np.asarray(read_vectors(tmp_path / "v"))

    # the server's Infer: the queue, its request batches and the engine's finishing
    from minibert.serve.infer import Infer
    from minibert.serve.limits import Limits

    async def served():
        infer = Infer(engine, Limits(), ThreadPoolExecutor(1))
        infer.start()
        options = engine.options()
        vectors = await infer.embed(infer.tokenize(TEXTS, options), options)
        await infer.stop()
        return vectors

    got["server (Infer)"] = asyncio.run(served())

    # Ray Data's and Ray Serve's classes, driven directly (their Ray wiring is tests/test_ray.py's)
    from minibert.corpus.ray import MinibertEmbedder
    from minibert.serve.ray_serve import Embedder

    got["Ray Data"] = MinibertEmbedder(str(minilm_dir))({"text": np.array(TEXTS, dtype=object)})["embedding"]
    replica = Embedder(str(minilm_dir))

    async def one_request_batches(encodings):  # what Ray Serve's @serve.batch makes of a lone request
        return (await replica._embed_batch([encodings]))[0]

    replica._batched = one_request_batches
    got["Ray Serve"] = asyncio.run(replica.embed(TEXTS))

    for name, vectors in got.items():
        atol = 1e-5 if name == "numpy backend" else 1e-6
        np.testing.assert_allclose(vectors, expected, atol=atol, rtol=0, err_msg=name)


def test_token_ids_go_through_the_same_path(encoder):
    engine = encoder.engine
    ids = [encoder.tokenizer.encode([t])[0].ids[1:-1] for t in TEXTS[:2]]
    given, _ = engine.tokenize(ids, engine.options())
    assert all(isinstance(e, TokenIds) for e in given)
    np.testing.assert_allclose(engine.encode(ids, engine.options())[0], encoder.encode(TEXTS[:2]), atol=1e-6)
    with pytest.raises(ValueError, match="input 0 holds token id 999999, outside the vocabulary"):
        engine.tokenize([[999999]], engine.options())
