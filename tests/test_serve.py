"""`minibert serve` as its users meet it: a server started as a subprocess on a free loopback port, driven
by the real `openai` client and by plain HTTP, its vectors held to Encoder.encode's."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serving import Server

from minibert import Encoder
from minibert.engine.core import TokenIds

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn, prometheus-client) is not installed")
openai = pytest.importorskip("openai", reason="the openai client (a test dependency) is not installed")

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["A man is eating food.", "The girl is carrying a baby.", "短い", "", "A dog barks at the moon " * 40]


@pytest.fixture(scope="module")
def server():
    s = Server("--max-queue-seconds", "60")  # these tests check answers, not admission
    yield s
    s.stop()


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder.from_pretrained(minilm_dir)


def client(server, **kwargs):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "unused"), max_retries=0, **kwargs)


def test_the_openai_client_gets_encodes_vectors_in_either_format_from_strings_or_token_ids(server, encoder):
    expected = encoder.encode(TEXTS)
    c = client(server)
    for fmt in (openai.NOT_GIVEN, "float"):  # the client asks for base64 unless told otherwise
        result = c.embeddings.create(model=MODEL, input=TEXTS, encoding_format=fmt)
        got = np.array([d.embedding for d in result.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        assert [d.index for d in result.data] == list(range(len(TEXTS)))
    ids = [encoder.tokenizer.encode([t], max_length=256)[0].ids[1:-1] for t in TEXTS[:3]]
    result = c.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in result.data]), expected[:3], atol=1e-6, rtol=0)
    one = c.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=1e-6, rtol=0)
    assert one.usage.prompt_tokens == one.usage.total_tokens == len(encoder.tokenizer.encode([TEXTS[0]])[0].ids)
    assert [m.id for m in c.models.list()] == [MODEL]


def test_tei_routes_and_their_options(server, encoder):
    status, _, vectors = server.request("/embed", {"inputs": TEXTS, "normalize": False})
    assert status == 200
    np.testing.assert_allclose(vectors, encoder.encode(TEXTS, normalize=False), atol=1e-5, rtol=1e-6)
    long = "word " * 400
    status, _, body = server.request("/embed", {"inputs": ["fine", long], "truncate": False})
    assert status == 422 and "input 1 is longer than the model's 256 tokens" in body["error"]
    status, _, left = server.request("/embed", {"inputs": [long + "end"], "truncation_direction": "Left"})
    tokens = encoder.tokenizer.encode([long + "end"], truncation=False)[0].ids
    kept = [tokens[0], *tokens[len(tokens) - 255 : -1], tokens[-1]]
    ids_only = encoder.engine.embed([TokenIds(kept)], encoder.engine.options(normalize=True)).numpy()
    assert status == 200 and np.allclose(left, ids_only, atol=1e-5)
    status, _, pieces = server.request("/tokenize", {"inputs": "Hello world"})
    assert status == 200 and [p["text"] for p in pieces[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert pieces[0][1]["start"] == 0 and pieces[0][1]["stop"] == 5 and pieces[0][0]["special"]


def test_requests_that_cannot_be_served_get_one_line_4xx(server):
    cases = [
        ({"input": "x", "model": "gpt-4"}, 404, "is not served here"),
        ({"input": "x", "dimensions": 128}, 400, "dimensions must be this model's own 384"),
        ({"input": []}, 400, "input must be a string"),
        ({"input": [1.5]}, 400, "input[0] must be a string or a non-empty list of token ids"),
        ({"input": [[1, 10**9]]}, 400, "outside the vocabulary"),
        ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format must be one of float, base64"),
        ({"nope": 1}, 400, "input is missing"),
        ({"input": ["t"] * 3000}, 413, "3000 inputs, more than the 2048"),
    ]
    for body, status, message in cases:
        got, _, reply = server.request("/v1/embeddings", body)
        assert got == status and message in reply["error"]["message"], (body, reply)
        assert "\n" not in reply["error"]["message"] and len(reply["error"]["message"]) < 300
    raw = [
        (b"{", 400, "the body is not JSON"),
        (b'{"input": "caf\xe9"}', 400, "the body is not UTF-8"),
        (b"[" * 100000 + b"]" * 100000, 400, "nested too deeply"),
    ]
    for data, status, message in raw:
        got, _, reply = server.request("/v1/embeddings", raw=data)
        assert got == status and message in reply["error"]["message"], (data[:20], reply)
    with socket.create_connection(("127.0.0.1", server.port)) as conn:  # 9 MiB announced: refused unread
        conn.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 9437184\r\n\r\n"
        )
        conn.settimeout(30)
        reply = b""
        while b"larger" not in reply and (chunk := conn.recv(65536)):
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "larger than the 8388608-byte limit" in reply
    status, _, _ = server.request("/health")
    assert status == 200  # still serving


def test_32_concurrent_clients_with_mixed_lengths_and_settings_get_their_own_vectors(server, encoder):
    rng = np.random.default_rng(0)
    words = "the river runs past the old mill into a town where people meet at night".split()
    jobs = []
    for i in range(32):
        texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 120)))) for _ in range(int(rng.integers(1, 9)))]
        jobs.append((texts, bool(i % 2), "embed" if i % 3 == 0 else "openai"))

    def run(job):
        texts, normalize, route = job
        if route == "openai":
            result = client(server).embeddings.create(model=MODEL, input=texts)
            return np.array([d.embedding for d in result.data])
        return np.array(server.request("/embed", {"inputs": texts, "normalize": normalize})[2])

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(run, jobs))
    for (texts, normalize, route), got in zip(jobs, results):
        want = encoder.encode(texts, normalize=True if route == "openai" else normalize)
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_metrics_count_what_was_sent(server):
    def count(route, status):
        metrics = server.request("/metrics")[2]
        line = f'minibert_requests_total{{route="{route}",status="{status}"}}'
        found = [x for x in metrics.splitlines() if x.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    before = count("tokenize", "200"), count("tokenize", "400")
    for _ in range(5):
        server.request("/tokenize", {"inputs": "one"})
    for _ in range(3):
        server.request("/tokenize", {"inputs": 7})
    assert (count("tokenize", "200"), count("tokenize", "400")) == (before[0] + 5, before[1] + 3)
    metrics = server.request("/metrics")[2]
    for series in (
        "minibert_queue_depth",
        "minibert_batch_texts_bucket",
        "minibert_batch_tokens_bucket",
        "minibert_queue_seconds_bucket",
        "minibert_tokenize_seconds_bucket",
        "minibert_batch_seconds_bucket",
        "minibert_serialize_seconds_bucket",
    ):
        assert series in metrics


def test_a_client_that_goes_away_stalls_no_one(server):
    heavy = json.dumps({"input": ["many words in a long text " * 60] * 2000}).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(heavy) + heavy
        )
        time.sleep(0.3)
    start = time.perf_counter()
    status, _, _ = server.request("/v1/embeddings", {"input": "a quick one"})
    assert status == 200 and time.perf_counter() - start < 5  # the 2000 long texts were dropped, not computed


def test_the_api_key_is_enforced():
    s = Server(env={"MINIBERT_API_KEY": "s3cret"})
    try:
        with pytest.raises(openai.AuthenticationError):
            client(s, api_key="wrong").embeddings.create(model=MODEL, input="x")
        status, head, body = s.request("/v1/embeddings", {"input": "x"})
        assert status == 401 and head.get("www-authenticate", head.get("WWW-Authenticate")) == "Bearer"
        assert client(s, api_key="s3cret").embeddings.create(model=MODEL, input="x").data[0].index == 0
        assert s.request("/health")[0] == 200  # a load balancer's probe needs no key
        assert s.request("/metrics")[0] == 401
    finally:
        s.stop()


def test_past_the_limit_requests_get_429_and_the_accepted_ones_their_own_answer(encoder):
    s = Server("--max-concurrent-requests", "2")
    try:
        texts = [[f"request {i}: " + "a long sentence about rivers and towns " * 20] * 4 for i in range(40)]
        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(lambda t: s.request("/embed", {"inputs": t}), texts))
        statuses = [r[0] for r in results]
        assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
        assert all(r[1].get("retry-after", r[1].get("Retry-After")) == "1" for r in results if r[0] == 429)
        for t, (status, _, body) in zip(texts, results):
            if status == 200:
                np.testing.assert_allclose(body, encoder.encode(t), atol=2e-6, rtol=0)
    finally:
        s.stop()


def test_sigterm_drains_what_is_in_flight_and_refuses_new_work():
    s = Server("--drain-seconds", "60")
    try:
        long = {"inputs": ["many words in a long text " * 60] * 200}
        result = {}
        worker = threading.Thread(target=lambda: result.update(reply=s.request("/embed", long)))
        worker.start()
        time.sleep(0.5)
        s.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            late = s.request("/embed", {"inputs": "late"})[0]
        except (urllib.error.URLError, ConnectionError):
            late = "refused"
        worker.join(timeout=120)
        assert s.process.wait(timeout=60) == 0
        assert result["reply"][0] == 200 and len(result["reply"][2]) == 200  # finished, not cut off
        assert late in (503, "refused")
    finally:
        s.stop()


def test_the_queue_delay_follows_what_recent_request_batches_took():
    """Admission under --max-queue-seconds rests on this estimate: queued tokens in request batches, each
    costing what recent batches of that size cost (0 before any)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from minibert.serve.queue import Queue

    def forward(encodings, output):  # 5 ms a batch, and 1 ms per token
        time.sleep(0.005 + 0.001 * sum(len(e.ids) for e in encodings))
        return np.zeros((len(encodings), 4), np.float32)

    async def scenario():
        queue = Queue(forward, max_batch_tokens=100, thread=ThreadPoolExecutor(1))
        assert queue.wait_seconds() == 0.0
        queue.start()
        await queue.submit([TokenIds([0] * 10)])
        await queue.submit([TokenIds([0] * 90)])  # two sizes: the overhead and the rate per token
        first = asyncio.ensure_future(queue.submit([TokenIds([0] * 100)]))
        queued = asyncio.ensure_future(queue.submit([TokenIds([0] * 100)] * 3))
        await asyncio.sleep(0.03)  # the first is in its forward; 3 batches of 100 tokens wait behind it
        estimate = queue.wait_seconds()
        await asyncio.gather(first, queued)
        await queue.stop()
        return estimate

    estimate = asyncio.run(scenario())
    assert 0.25 < estimate < 0.5, estimate  # 3 x (5 ms + 100 x 1 ms), and each thread hand-over
