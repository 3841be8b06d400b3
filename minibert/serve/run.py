"""Running `minibert serve`: the app (app.py) on minibert's HTTP server (http.py), one line on stderr when
ready, and a clean stop. SIGTERM or SIGINT (Ctrl-C) drains: new work gets 503 while what is in flight
finishes, within the drain time, and the process exits 0; a second signal exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from minibert.serve.app import State, create_app, drain
from minibert.serve.http import Server
from minibert.serve.limits import Limits


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port; a port in use or an address this machine lacks is a one-line OSError."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(
    models: list,
    *,
    host: str,
    port: int,
    limits: Limits,
    api_key=None,
    cors_origins=None,
    access_log: bool = True,
) -> int:
    """Serve `models` (serve/models.py's Model, names unique) until SIGTERM or SIGINT; returns the exit code."""
    from minibert.fast.cpu import features

    state = State(
        models={model.name: model for model in models},
        limits=limits,
        api_key=api_key,
        cpu=features().describe(),
        access_log=access_log,
    )
    sock = listening_socket(host, port)
    return asyncio.run(_serve(state, create_app(state, cors_origins), sock, host, port))


async def _serve(state: State, app, sock: socket.socket, host: str, port: int) -> int:
    loop = asyncio.get_running_loop()
    server = Server(app, state.limits)
    outcome = {"code": 0}
    signals = []

    def on_signal(sig):
        signals.append(sig)
        if len(signals) > 1 or not state.ready:  # a second signal, or nothing to drain: stop now
            os._exit(128 + sig)
        loop.create_task(drain(state)).add_done_callback(lambda _: server.stop())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    def ready(state: State) -> None:
        if state.failed:
            print(f"minibert serve: error: {state.failed}", file=sys.stderr, flush=True)
            outcome["code"] = 1
            server.stop()
            return
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        limits = state.limits
        served = "; ".join(describe_line(model) for model in state.models.values())
        print(
            f"minibert: serving {served}; CPU {state.cpu}; at {where}; limits: "
            f"{limits.max_concurrent_requests} requests, {limits.max_queue_seconds:g} s of queue, "
            f"{limits.max_request_texts} inputs and {limits.max_body_bytes} bytes a request, "
            f"{limits.max_connections} connections",
            file=sys.stderr,
            flush=True,
        )

    state.on_ready.append(ready)
    await server.startup()
    try:
        await server.run(sock)
    finally:
        await server.shutdown()
    return outcome["code"]


def describe_line(model) -> str:
    """One model for the ready line: its name and task, and what its vectors or scores are."""
    s = model.served
    what = [f"{s['dim']} dimensions"] if "dim" in s else [f"labels {', '.join(s['labels'])}"]
    what += [s["dtype"]] + (["int8"] if s["int8"] else []) + [f"max {s['max_input_length']} tokens"]
    if model.task == "embed":
        what.append(f"{s['pooling']} pooling" + (", normalised" if s["normalize"] else ""))
    return f"{model.name} ({model.task}: {', '.join(what)})"
