"""minibert.corpus.ray on a local Ray cluster the test starts itself (2 CPUs): Ray Data's batch-inference recipe
with MinibertEmbedder, against Encoder.encode in this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minibert import Encoder

TEXTS = [f"row {i}: " + "a sentence about the river and the town " * (1 + i % 5) for i in range(40)]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_map_batches_gives_the_single_process_vectors_with_ids_aligned(ray_cluster, minilm_dir):
    from minibert.corpus.ray import MinibertEmbedder

    ray = ray_cluster
    rows = [{"id": 1000 + i, "text": t} for i, t in enumerate(TEXTS)]
    ds = ray.data.from_items(rows).repartition(4)
    ds = ds.map_batches(
        MinibertEmbedder,
        concurrency=1,
        batch_size=8,
        num_cpus=1,  # 1 CPU left for reading
        fn_constructor_kwargs={"model": str(minilm_dir), "threads": 1},
    )
    out = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in out] == [1000 + i for i in range(len(TEXTS))]
    assert [r["text"] for r in out] == TEXTS
    expected = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    np.testing.assert_allclose(np.stack([r["embedding"] for r in out]), expected, atol=1e-6, rtol=0)


def test_read_text_to_parquet_script_recipe(ray_cluster, minilm_dir, tmp_path):
    import pyarrow.parquet as pq

    from minibert.corpus.ray import MinibertEmbedder

    ray = ray_cluster
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n")
    ds = ray.data.read_text(str(tmp_path / "in.txt"))
    ds = ds.map_batches(
        MinibertEmbedder, concurrency=1, batch_size=16, fn_constructor_kwargs={"model": str(minilm_dir)}
    )
    ds.write_parquet(str(tmp_path / "out"))
    table = pq.read_table(tmp_path / "out")
    by_text = dict(zip(table.column("text").to_pylist(), table.column("embedding").to_pylist()))
    assert sorted(by_text) == sorted(TEXTS)
    expected = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    got = np.array([by_text[t] for t in TEXTS], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_a_missing_column_is_named(minilm_dir):
    from minibert.corpus.ray import MinibertEmbedder

    embedder = MinibertEmbedder(str(minilm_dir), text_column="body")
    with pytest.raises(KeyError, match=r"no column 'body' in the batch \(columns: text\)"):
        embedder({"text": np.array(["a"])})


def test_embed_ray_script_end_to_end(minilm_dir, tmp_path):
    """The script starts its own local Ray (no --address), reads JSONL, writes Parquet."""
    import json

    import pyarrow.parquet as pq

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"doc": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    script = Path(__file__).parents[1] / "scripts" / "embed_ray.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "in.jsonl"),
            str(tmp_path / "out"),
            "--text-column",
            "body",
            "--model",
            str(minilm_dir),
            "--batch-size",
            "16",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = pq.read_table(tmp_path / "out")
    docs, vectors = table.column("doc").to_pylist(), np.array(table.column("embedding").to_pylist(), np.float32)
    expected = Encoder.from_pretrained(minilm_dir).encode(TEXTS)
    np.testing.assert_allclose(vectors, expected[docs], atol=1e-6, rtol=0)
    assert sorted(docs) == list(range(len(TEXTS)))


def test_ray_serve_gives_the_single_process_vectors_over_http_and_a_handle(ray_cluster, minilm_dir):
    pytest.importorskip("ray.serve", reason="Ray Serve (ray[serve]) is not installed")
    import builtins
    import json
    import socket
    import urllib.error
    import urllib.request

    from ray import serve

    from minibert import Encoder
    from minibert.serve.ray_serve import deployment

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print_before = builtins.print  # Ray Serve redirects print in the driver; later tests pickle the real one
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        handle = serve.run(deployment(str(minilm_dir)).bind(), route_prefix="/v1/embeddings")
        expected = Encoder.from_pretrained(minilm_dir).encode(TEXTS[:6])
        pending = [handle.embed.remote(t) for t in TEXTS[:6]]  # six requests at once, which Ray Serve batches
        by_handle = [response.result() for response in pending]
        np.testing.assert_allclose(np.concatenate(by_handle), expected, atol=1e-6, rtol=0)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/embeddings",
            method="POST",
            data=json.dumps({"input": TEXTS[:6], "encoding_format": "float"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.loads(response.read())
        np.testing.assert_allclose(np.array([d["embedding"] for d in body["data"]]), expected, atol=1e-6, rtol=0)
        engine = Encoder.from_pretrained(minilm_dir).engine
        tokens = sum(len(e.ids) for e in engine.tokenize(TEXTS[:6], engine.options())[0])
        assert body["model"] == minilm_dir.name and body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
        for bad, status in (({"input": "x", "model": "other"}, 404), ({"input": "x", "encoding_format": []}, 400)):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/embeddings",
                method="POST",
                data=json.dumps(bad).encode(),
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=120)
            assert refused.value.code == status
    finally:
        serve.shutdown()
        builtins.print = print_before


def test_ray_serve_refuses_more_replicas_than_the_cluster_has_cpus_for(ray_cluster):
    pytest.importorskip("ray.serve", reason="Ray Serve (ray[serve]) is not installed")
    import ray

    from minibert.serve.ray_serve import deployment

    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(
        ValueError, match=f"{cpus + 1} replicas of 1 CPU need {cpus + 1} CPUs, and this Ray cluster has"
    ):
        deployment(num_replicas=cpus + 1)
    deployment(num_replicas=cpus)  # what fits is built
