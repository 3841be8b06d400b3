"""The hostile clients README.md's table of HTTP servers was measured with, against a trivial Starlette app on
each candidate server in turn: a 100 MB header, a header line a second, a silent connection, 2,000 idle
connections then a client, and a 64 MiB answer that is never read.

    pip install uvicorn hypercorn granian psutil     # the candidates; minibert's own needs the serve extra
    python scripts/probe_http_servers.py uvicorn-h11 uvicorn-httptools hypercorn granian minibert

One JSON line per server. This file is also the app the servers run (`probe_http_servers:app`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def big(request):
    return Response(b"x" * (64 << 20))


async def ok(request):
    return JSONResponse({"n": len(await request.body())})


app = Starlette(routes=[Route("/big", big), Route("/ok", ok, methods=["GET", "POST"])])
HERE = Path(__file__).parent


def commands(port: int) -> dict:
    py, target = sys.executable, "probe_http_servers:app"
    minibert = (
        "import asyncio, sys; from minibert.serve.http import Server; from minibert.serve.limits import Limits; "
        "from minibert.serve.run import listening_socket; from probe_http_servers import app\n"
        "async def main():\n    s = Server(app, Limits()); await s.startup()\n"
        f"    await s.run(listening_socket('127.0.0.1', {port}))\nasyncio.run(main())"
    )
    uvicorn = [py, "-m", "uvicorn", target, "--port", str(port), "--log-level", "critical"]
    uvicorn += ["--limit-concurrency", "1000", "--timeout-keep-alive", "5"]
    return {
        "uvicorn-h11": uvicorn + ["--http", "h11", "--loop", "asyncio"],
        "uvicorn-httptools": uvicorn + ["--http", "httptools", "--loop", "uvloop"],
        "hypercorn": [py, "-m", "hypercorn", target, "--bind", f"127.0.0.1:{port}", "--keep-alive", "5"],
        "granian": [py, "-m", "granian", "--interface", "asgi", "--port", str(port), "--workers", "1", target],
        "minibert": [py, "-c", minibert],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(process) -> float:
    import psutil

    p = psutil.Process(process.pid)
    return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 2**20


def first_line(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(100).split(b"\r\n")[0].decode()
    except OSError as e:
        return type(e).__name__


def closed_after(sock: socket.socket, seconds: float, trickle: bool) -> str:
    """How long until the server closes `sock` (sending a header line a second if `trickle`), and what it said."""
    sock.setblocking(False)
    start = time.time()
    while time.time() - start < seconds:
        try:
            if trickle:
                sock.send(b"X-A: b\r\n")
            data = sock.recv(100)
            return f"closed at {time.time() - start:.0f} s{', ' + data[:12].decode() if data else ''}"
        except BlockingIOError:
            time.sleep(1)
        except OSError as e:
            return f"{type(e).__name__} at {time.time() - start:.0f} s"
    return f"open after {seconds:.0f} s"


def probe(name: str) -> dict:
    port = free_port()
    process = subprocess.Popen(commands(port)[name], cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while first_line(port) in ("ConnectionRefusedError", "TimeoutError"):
            time.sleep(0.2)
        base, out = rss_mib(process), {"server": name}
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(20)
            s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 100 << 20:
                    s.sendall(b"a" * (1 << 20))
                    sent += 1 << 20
                s.sendall(b"\r\n\r\n")
                answer = s.recv(200).split(b"\r\n")[0].decode()
            except OSError as e:
                answer = f"{type(e).__name__} after {sent >> 20} MiB"
        out["100 MB header"] = f"{answer}; RSS +{rss_mib(process) - base:.0f} MiB"
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"GET /ok HTTP/1.1\r\n")
            out["a header line a second"] = closed_after(slow, 75, trickle=True)
        with socket.create_connection(("127.0.0.1", port)) as silent:
            out["a silent connection"] = closed_after(silent, 75, trickle=False)
        held = []
        for _ in range(2000):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                break
        out["2,000 idle connections, then a client"] = first_line(port)
        for s in held:
            s.close()
        time.sleep(1)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(40)
            out["64 MiB answer unread, after 40 s"] = f"RSS +{rss_mib(process) - base:.0f} MiB"
        return out
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    for name in sys.argv[1:] or list(commands(0)):
        print(json.dumps(probe(name)), flush=True)
