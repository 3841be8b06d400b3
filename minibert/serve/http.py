"""`minibert serve`'s HTTP/1.1 server: h11's strict parser on asyncio, running the ASGI app with a limit on
everything a client can hold.

A client is allowed, per connection:
- `idle_seconds` with no request in progress (a new connection, or between keep-alive requests): then the
  socket is closed;
- `header_seconds` from the first byte of a request to the end of its headers, and `max_header_bytes` for
  the request line and headers: then 408 or 431, and the socket is closed;
- `write_seconds` to read each part of an answer it has not read: then the connection is dropped, and
  the answer's memory with it;
and `max_connections` connections at once: one more is answered 503 and closed. A request that carries
both Content-Length and Transfer-Encoding is refused (400), so that no proxy in front can read it one way
and this server another. The body's own limits (size and time) are the app's (app.read_body).

Why this server and not one of the three that `minibert serve` could run on (measured with hostile
clients on this project's loopback, each server on a trivial Starlette app; figures in README.md):
uvicorn (h11 or httptools) has no header time limit and never closes an idle new connection, reads a
100 MB header whole with httptools, and holds an unread answer forever; hypercorn and granian miss other
parts of the list. Each limit here is a few lines, and each has a test against real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import h11

from minibert.serve.limits import Limits

HIGH_WATER = 1 << 16  # bytes of a request body buffered before the connection stops reading
READ_SIZE = 1 << 14  # bytes read from one connection per turn of the event loop


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:  # 499, which HTTP does not name
        return b"Client Closed Request" if status == 499 else b""


def plain_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for what is refused before the app sees it."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = json.dumps({"error": message, "error_type": kind}).encode()
    head = f"HTTP/1.1 {status} {reason(status).decode()}\r\ncontent-type: application/json\r\n"
    return (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class Server:
    """Serves `app` (ASGI 3) under `limits`; `run(sock)` until `stop()`."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task] = set()
        self.stopped = asyncio.Event()

    async def startup(self) -> None:
        """The app's lifespan startup (ASGI lifespan protocol)."""
        self._lifespan_in, self._lifespan_out = asyncio.Queue(), asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}

        async def receive():
            return await self._lifespan_in.get()

        async def send(message):
            await self._lifespan_out.put(message)

        self._lifespan = asyncio.ensure_future(self.app(scope, receive, send))
        await self._lifespan_in.put({"type": "lifespan.startup"})
        reply = await self._lifespan_out.get()
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(reply.get("message") or "the app's startup failed")

    async def shutdown(self) -> None:
        await self._lifespan_in.put({"type": "lifespan.shutdown"})
        await self._lifespan_out.get()

    async def run(self, sock: socket.socket) -> None:
        """Accept connections on the listening `sock` until stop(); then close every connection."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=2048)
        try:
            await self.stopped.wait()
        finally:
            server.close()
            if self.tasks:  # the last answers (a drain's 503s among them) are written before the sockets close
                await asyncio.wait(self.tasks, timeout=5)
            for connection in list(self.connections):
                connection.close()

    def stop(self) -> None:
        self.stopped.set()


class Connection(asyncio.Protocol):
    """One client's connection: h11's state machine, a deadline for whatever the client owes, and one
    request (Cycle) at a time."""

    def __init__(self, server: Server):
        self.server, self.limits = server, server.limits
        self.loop = asyncio.get_event_loop()
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self.transport = None
        self.cycle: Cycle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = False  # bytes of the next request have arrived
        self.writable = asyncio.Event()
        self.writable.set()

    # --- asyncio.Protocol --------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= self.limits.max_connections:
            transport.write(
                plain_response(503, f"{len(self.server.connections)} connections are open, the most this server takes")
            )
            transport.close()
            return
        self.server.connections.add(self)
        # asyncio reads up to 256 KiB per connection per turn of the loop: 300 clients sending bodies at once
        # then held every other socket, a new /health among them, for 0.13-0.16 s (measured). 16 KiB a turn
        # lets the loop go round more often.
        if hasattr(transport, "max_size"):
            transport.max_size = READ_SIZE
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        local = transport.get_extra_info("sockname")
        self.local = (local[0], local[1]) if isinstance(local, tuple) else None
        self._deadline(self.limits.idle_seconds, self._idle)

    def data_received(self, data: bytes) -> None:
        if self.cycle is None and not self.started:  # the first bytes of a request: its headers are now owed
            self.started = True
            self._deadline(self.limits.header_seconds, self._headers_late)
        self.conn.receive_data(data)
        self._events()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        self._cancel_deadline()
        self.writable.set()
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.wake.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # --- requests ----------------------------------------------------------------------------------------

    def _events(self) -> None:
        while self.cycle is None or not self.cycle.paused:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint if e.error_status_hint in (400, 431) else 400
                message = (
                    f"the request line and headers are larger than the {self.limits.max_header_bytes}-byte limit"
                    if status == 431
                    else "the request is not valid HTTP/1.1"
                )
                self._refuse(status, message)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if event is h11.PAUSED:
                    self.transport.pause_reading()
                return
            if isinstance(event, h11.Request):
                self._cancel_deadline()
                names = {name for name, _ in event.headers}
                if b"content-length" in names and b"transfer-encoding" in names:
                    self._refuse(400, "a request may not carry both Content-Length and Transfer-Encoding")
                    return
                self.cycle = Cycle(self, event)
                task = self.loop.create_task(self.cycle.run())
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
            elif isinstance(event, h11.Data):
                self.cycle.body.append(event.data)
                self.cycle.buffered += len(event.data)
                if self.cycle.buffered > HIGH_WATER:
                    self.cycle.paused = True
                    self.transport.pause_reading()
                self.cycle.wake.set()
            elif isinstance(event, h11.EndOfMessage):
                self.cycle.complete = True
                self.cycle.wake.set()
                return
            elif isinstance(event, h11.ConnectionClosed):
                if self.cycle is not None:
                    self.cycle.disconnected = True
                    self.cycle.wake.set()
                return

    def body_read(self) -> None:
        """The app took the buffered body: read from the socket again."""
        if self.cycle is not None and self.cycle.paused:
            self.cycle.paused = False
            self.transport.resume_reading()
            self._events()  # what h11 already holds

    def response_done(self) -> None:
        """The answer is written: keep the connection for the next request, or close it."""
        self.cycle = None
        if self.transport.is_closing():
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.started = False
            self.transport.resume_reading()
            self._deadline(self.limits.idle_seconds, self._idle)
            if self.conn.trailing_data[0]:  # a pipelined request already here
                self.started = True
                self._deadline(self.limits.header_seconds, self._headers_late)
                self._events()
        else:  # the client closes, or its body was not read to the end: the connection cannot go on
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(plain_response(status, message))
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def drop(self) -> None:
        """Close at once, with a reset: what this process buffered for the client is freed now, and what the
        kernel buffered too (a plain close would keep trying to deliver it to a client that does not read)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    # --- deadlines ---------------------------------------------------------------------------------------

    def _deadline(self, seconds: float, then) -> None:
        self._cancel_deadline()
        self.timer = self.loop.call_later(seconds, then)

    def _cancel_deadline(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle(self) -> None:
        if self.cycle is None and not self.started:
            self.transport.close()

    def _headers_late(self) -> None:
        if self.cycle is None:
            self._refuse(408, f"the request's headers did not arrive within {self.limits.header_seconds:g} s")


class Cycle:
    """One request and its answer: the ASGI scope, receive and send of the app's call."""

    def __init__(self, connection: Connection, request: h11.Request):
        self.connection, self.conn = connection, connection.conn
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole body has arrived
        self.body_delivered = False  # the app has had it all
        self.paused = False
        self.disconnected = False
        self.wake = asyncio.Event()
        self.response_started = self.response_complete = False
        self.head = b""  # the response's status line and headers, until the body's first part goes with them
        path, _, query = request.target.partition(b"?")
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version.decode("ascii"),
            "server": connection.local,
            "client": connection.client,
            "scheme": "http",
            "method": request.method.decode("ascii"),
            "root_path": "",
            "path": unquote(path.decode("ascii", "replace")),
            "raw_path": path,
            "query_string": query,
            "headers": [(name.lower(), value) for name, value in request.headers],
        }

    async def run(self) -> None:
        try:
            await self.connection.server.app(self.scope, self.receive, self.send)
        except Exception:  # the app answers its own faults; this is one in the answer itself
            import traceback

            traceback.print_exc(file=sys.stderr)
            if not self.response_started and not self.disconnected:
                await self.send({"type": "http.response.start", "status": 500, "headers": []})
                await self.send({"type": "http.response.body", "body": b""})
        finally:
            if not self.response_complete:
                self.connection.close()
            self.connection.response_done()

    async def receive(self) -> dict:
        """The body as it arrives (the last message says more_body False, once); then, until the client goes,
        nothing: a receive after the body waits for the disconnect."""
        while True:
            if self.disconnected:
                return {"type": "http.disconnect"}
            if self.body or (self.complete and not self.body_delivered):
                body, self.body, self.buffered = b"".join(self.body), [], 0
                self.body_delivered = self.complete
                self.connection.body_read()
                return {"type": "http.request", "body": body, "more_body": not self.complete}
            self.wake.clear()
            await self.wake.wait()

    async def send(self, message: dict) -> None:
        if self.disconnected:
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.response_started = True
            headers = [(k.lower(), v) for k, v in message.get("headers", [])]
            headers += [(b"date", formatdate(usegmt=True).encode()), (b"server", b"minibert")]
            status = message["status"]
            self.head = self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason(status)))
            return  # written with the first part of the body: one write, not two
        elif kind == "http.response.body":
            data, self.head = self.head + self.conn.send(h11.Data(data=message.get("body", b""))), b""
            if not message.get("more_body", False):
                data += self.conn.send(h11.EndOfMessage())
                self.response_complete = True
        else:
            return
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        """Write, and wait for a client that reads slowly at most write_seconds, then drop it."""
        connection = self.connection
        connection.transport.write(data)
        if not connection.writable.is_set():
            try:
                await asyncio.wait_for(connection.writable.wait(), connection.limits.write_seconds)
            except asyncio.TimeoutError:
                self.disconnected = True
                connection.drop()
