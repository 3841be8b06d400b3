"""The `serve` case of scripts/bench.py: embedding servers side by side, each its own process on the same
model folder, driven the same way by a load generator of concurrent aiohttp clients on this machine.

Servers: `minibert serve`; infinity-emb (its torch engine, from a virtual environment of its own, since its
pins clash with minibert's test tools: --infinity-python); and a plain sentence-transformers behind FastAPI
(scripts/st_server.py). Loads: one short query (3-12 words) per request at 1, 8 and 64 clients; 16
documents of 50-250 words per request at 8 clients; for minibert, an open-loop rate sweep, a soak at 80%
of its peak, and 3x its peak offered. Reported: throughput, p50 and p99 latency, peak RSS of the server,
CPU seconds per request, and errors by status. Needs aiohttp and psutil (the `bench` extra).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

WORDS = (
    "the river runs past an old mill into a quiet town where people gather at night to talk about "
    "weather markets music and the long winter ahead of them all"
).split()


def short_query(rng) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 12)))]


def documents(rng) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(50, 250))) for _ in range(16)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process, ready when `ready_text` appears on its stderr; its RSS sampled every 0.2 s."""

    def __init__(self, name, argv, port, path, ready_text, env=None):
        import psutil

        self.name, self.port, self.path = name, port, path
        self.process = subprocess.Popen(
            argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})}
        )
        deadline = time.time() + 600
        lines = []
        while time.time() < deadline:
            line = self.process.stderr.readline()
            lines.append(line)
            if ready_text in line:
                break
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"{name} exited: {''.join(lines)[-2000:]}")
        threading.Thread(target=lambda: [None for _ in self.process.stderr], daemon=True).start()
        import urllib.request

        while True:  # its line may come before it listens: ask its /health until it answers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"{name} does not answer on port {port}") from None
                time.sleep(0.2)
        self.ps = psutil.Process(self.process.pid)
        self.peak = 0
        self.sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while self.sampling:
            try:
                rss = self.ps.memory_info().rss + sum(c.memory_info().rss for c in self.ps.children(recursive=True))
                self.peak = max(self.peak, rss)
            except Exception:
                return
            time.sleep(0.2)

    def rss(self) -> int:
        return self.ps.memory_info().rss + sum(c.memory_info().rss for c in self.ps.children(recursive=True))

    def cpu(self) -> float:
        times = [self.ps.cpu_times()] + [c.cpu_times() for c in self.ps.children(recursive=True)]
        return sum(t.user + t.system for t in times)

    def stop(self):
        self.sampling = False
        self.process.kill()
        self.process.wait()


HEALTH_PROBE = """
import json, sys, time, urllib.request
url, seconds, times = sys.argv[1], float(sys.argv[2]), []
stop = time.time() + seconds
while time.time() < stop:
    start = time.perf_counter()
    urllib.request.urlopen(url, timeout=30).read()
    times.append(time.perf_counter() - start)
    time.sleep(0.05)
print(json.dumps(times))
"""


def health_probe(server: Server, seconds: float) -> subprocess.Popen:
    """A process of its own (so that the load generator's own work does not delay it) that asks /health every
    50 ms for `seconds` and prints the latencies."""
    url = f"http://127.0.0.1:{server.port}/health"
    return subprocess.Popen([sys.executable, "-c", HEALTH_PROBE, url, str(seconds)], stdout=subprocess.PIPE, text=True)


async def closed_loop(server: Server, model: str, make, clients: int, seconds: float, seed=0, health=False) -> dict:
    """`clients` each sending one request after another for `seconds`; with `health`, /health's p99 meanwhile."""
    import aiohttp

    url = f"http://127.0.0.1:{server.port}{server.path}"
    latencies, statuses = [], {}
    stop = time.perf_counter() + seconds

    async def client(i, session):
        rng = random.Random(seed * 1000 + i)
        while time.perf_counter() < stop:
            body = {"model": model, "input": make(rng)}
            start = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 200:
                latencies.append(time.perf_counter() - start)

    cpu = server.cpu()
    began = time.perf_counter()
    probe = health_probe(server, seconds - 1) if health else None
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(i, session) for i in range(clients)))
    out = summary(latencies, statuses, time.perf_counter() - began, server.cpu() - cpu, server.peak)
    if probe is not None:
        import json

        times = sorted(json.loads(probe.communicate()[0]))
        out["health_p99_ms"] = 1000 * times[min(len(times) - 1, int(0.99 * len(times)))]
        out["health_max_ms"] = 1000 * times[-1]
    return out


async def open_loop(server: Server, model: str, make, rate: float, seconds: float, seed=0) -> dict:
    """Requests sent at `rate` per second whatever the answers (Poisson arrivals), for `seconds`."""
    import aiohttp

    url = f"http://127.0.0.1:{server.port}{server.path}"
    latencies, statuses, rng = [], {}, random.Random(seed)
    rss_start = server.rss()

    async def one(session, body):
        start = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientError:
            status = "connection error"
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - start)

    cpu = server.cpu()
    began = time.perf_counter()
    tasks, rss = [], []

    async def sample():  # the server's RSS every 10 s
        while True:
            rss.append((time.perf_counter() - began, server.rss() / 2**20))
            await asyncio.sleep(10)

    sampler = asyncio.ensure_future(sample())
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        next_at = began
        while next_at < began + seconds:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(session, {"model": model, "input": make(rng)})))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    sampler.cancel()
    out = summary(latencies, statuses, time.perf_counter() - began, server.cpu() - cpu, server.peak)
    out.update(offered=len(tasks), rss_start_mib=rss_start / 2**20, rss_end_mib=server.rss() / 2**20, rss=rss)
    return out


def summary(latencies, statuses, seconds, cpu, peak) -> dict:
    latencies = sorted(latencies)
    ok = len(latencies)

    def pct(p):
        return 1000 * latencies[min(ok - 1, int(p * ok))] if ok else float("nan")

    return {
        "requests_per_s": ok / seconds,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "ok": ok,
        "statuses": statuses,
        "cpu_s_per_request": cpu / max(ok, 1),
        "peak_rss_mib": peak / 2**20,
    }


def show(name, load, r) -> None:
    extra = {k: v for k, v in r["statuses"].items() if k != 200}
    if "health_p99_ms" in r:
        extra["/health p99 / max ms"] = f"{r['health_p99_ms']:.1f} / {r['health_max_ms']:.1f}"
    print(
        f"{name:22}{load:28}{r['requests_per_s']:9.1f} req/s{r['p50_ms']:9.1f}{r['p99_ms']:9.1f} ms"
        f"{r['peak_rss_mib']:8.0f} MiB{1000 * r['cpu_s_per_request']:8.1f} ms cpu/req"
        + (f"  other: {extra}" if extra else ""),
        flush=True,
    )


def case_serve(args, tmp, results) -> None:
    from minibert import Encoder, default_model

    folder = str(default_model())
    seconds = args.serve_seconds
    servers = {
        "minibert": lambda p: Server(
            "minibert",
            [sys.executable, "-m", "minibert", "serve", "--port", str(p)],
            p,
            "/v1/embeddings",
            "minibert: serving",
        ),
        "sentence-transformers": lambda p: Server(
            "sentence-transformers",
            [sys.executable, str(Path(__file__).parent / "st_server.py"), folder, str(p)],
            p,
            "/v1/embeddings",
            "ready",
        ),
    }
    if args.infinity_python:
        servers["infinity-emb"] = lambda p: Server(
            "infinity-emb",
            [
                args.infinity_python,
                "-m",
                "infinity_emb.cli",
                "v2",
                "--model-id",
                folder,
                "--port",
                str(p),
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--no-bettertransformer",
            ],
            p,
            "/embeddings",
            "Uvicorn running",
            env={"INFINITY_ANONYMOUS_USAGE_STATS": "0"},
        )
    # the in-process reference for one query: Encoder.encode of one short text, median of 300
    encoder, rng = Encoder.from_pretrained(), random.Random(1)
    queries = [short_query(rng)[0] for _ in range(300)]
    for q in queries[:20]:
        encoder.encode(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        encoder.encode(q)
        times.append(time.perf_counter() - start)
    in_process = 1000 * statistics.median(times)
    del encoder
    print(f"\n## serve: all-MiniLM-L6-v2, {seconds:g} s per load, clients on this machine")
    print(f"in-process Encoder.encode of one short query: p50 {in_process:.2f} ms")
    results["serve"] = {"in_process_p50_ms": in_process}
    loads = [
        ("short, 1 client", short_query, 1),
        ("short, 8 clients", short_query, 8),
        ("short, 64 clients", short_query, 64),
        ("16 documents, 8 clients", documents, 8),
    ]
    names = [n for n in args.serve_with.split(",") if n in servers]
    running = {}
    try:
        for name in names:  # all up at once, so that each load alternates between them, round by round
            running[name] = servers[name](free_port())
            asyncio.run(closed_loop(running[name], model_of(name, folder), short_query, 4, 3.0))  # warm up
        for load, make, clients in loads:
            rounds = {name: [] for name in names}
            for _ in range(args.serve_rounds):
                for name in names:
                    server = running[name]
                    health = name == "minibert" and clients == 64  # /health while saturated
                    rounds[name].append(
                        asyncio.run(closed_loop(server, model_of(name, folder), make, clients, seconds, health=health))
                    )
            for name in names:
                r = median_round(rounds[name])
                show(name, load, r)
                results["serve"][f"{name} / {load}"] = r
        for name in [n for n in names if n != "minibert"]:
            running.pop(name).stop()  # the overload and soak loads measure minibert alone
        if "minibert" in running and args.serve_soak:
            overload(running["minibert"], args, results["serve"], seconds)
    finally:
        for server in running.values():
            server.stop()


def model_of(name: str, folder: str) -> str:
    return "all-MiniLM-L6-v2" if name == "minibert" else folder


def median_round(rounds: list[dict]) -> dict:
    """The round of median throughput, with the highest peak RSS of all rounds."""
    middle = sorted(rounds, key=lambda r: r["requests_per_s"])[len(rounds) // 2]
    return {**middle, "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds), "rounds": len(rounds)}


def overload(server: Server, args, results: dict, seconds: float) -> None:
    """minibert alone: an open-loop sweep around its peak, a soak at 80% of it, and 3x it offered."""
    model, name = "all-MiniLM-L6-v2", "minibert"
    peak = results[f"{name} / short, 64 clients"]["requests_per_s"]
    for fraction in (0.25, 0.5, 0.8, 1.0, 1.5):
        r = asyncio.run(open_loop(server, model, short_query, fraction * peak, seconds))
        show(name, f"open loop {fraction:.0%} of peak", r)
        results[f"{name} / open {fraction:.2f}"] = r
    soak = asyncio.run(open_loop(server, model, short_query, 0.8 * peak, args.serve_soak))
    show(name, f"soak {args.serve_soak:g} s at 80%", soak)
    growth = soak["rss_end_mib"] / soak["rss_start_mib"] - 1
    errors = sum(v for k, v in soak["statuses"].items() if k != 200)
    print(f"  soak: RSS {soak['rss_start_mib']:.0f} -> {soak['rss_end_mib']:.0f} MiB ({growth:+.1%}), errors {errors}")
    after = [mib for t, mib in soak["rss"] if t >= 120]  # from minute 2 on, sampled every 10 s
    if len(after) > 1:
        late = after[-1] / after[0] - 1
        soak["rss_growth_from_minute_2"] = late
        print(
            f"  soak: RSS from minute 2 {after[0]:.0f} -> {after[-1]:.0f} MiB ({late:+.1%}), max {max(after):.0f} MiB"
        )
    over = asyncio.run(open_loop(server, model, short_query, 3 * peak, seconds))
    show(name, "3x peak offered", over)
    lost = over["offered"] - sum(over["statuses"].values())
    print(
        f"  3x peak: accepted p99 {over['p99_ms']:.1f} ms vs soak p99 {soak['p99_ms']:.1f} ms, statuses "
        f"{over['statuses']}, lost {lost}"
    )
    results[f"{name} / soak"], results[f"{name} / 3x peak"] = soak, over
