"""`minibert serve` started as a subprocess on a free loopback port, for the server's tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`minibert serve ARGS` on a free port, ready once it prints its line."""

    def __init__(self, *args, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "minibert", "serve", "--port", str(self.port), *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines = []
        deadline = time.time() + 180
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {''.join(self.lines)}")
            self.lines.append(line)
            if line.startswith("minibert: serving"):
                threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True).start()
                return
        raise RuntimeError("the server did not get ready in 180 s")

    def request(self, path, body=None, raw=None, headers=None, method=None):
        """(status, headers, parsed JSON or text) of one request; bodies as JSON, or `raw` bytes."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method or ("POST" if data else "GET"),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, head, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            status, head, payload = e.code, dict(e.headers), e.read()
        text = payload.decode()
        try:
            return status, head, json.loads(text)
        except json.JSONDecodeError:
            return status, head, text

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def rss_mib(self) -> float:
        """The server's resident memory (Linux)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def health_seconds(self) -> float:
        """How long one GET /health takes, on a new connection."""
        start = time.perf_counter()
        status = self.request("/health")[0]
        assert status == 200, status
        return time.perf_counter() - start

    def connect(self, timeout: float = 30) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def post(path: str, body: bytes, content_type: str = "application/json", extra: bytes = b"") -> bytes:
    """A whole POST request as bytes."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + extra + b"\r\n" + body


def read_reply(sock: socket.socket) -> tuple[int, bytes]:
    """(status, everything until the server closes or 30 s pass) from a raw socket; status 0 if none came."""
    data = b""
    try:
        while chunk := sock.recv(1 << 16):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (reading and discarding whatever it sends)."""
    sock.settimeout(0.2)
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if not sock.recv(1 << 16):
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False
