"""What `minibert serve` allows a client, in one place: the defaults the command line shows, checked when a
Limits is made. Starlette-free, so that the command line can show the defaults without the serve extra.

Two batches, named apart: a *request batch* is what the queue hands the model thread at once, the texts
of many requests under `max_batch_tokens` real tokens; the engine then runs it as *micro-batches* of
similar length (minibert/engine/core.py: batch_size texts, micro_batch_tokens padded tokens)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_batch_tokens: int = 16384  # real tokens per request batch
    max_concurrent_requests: int = 512  # admitted at once (429 beyond), from the permit to the last byte sent
    max_queue_seconds: float = 5.0  # admitted only while the queued work would take less than this (429)
    max_request_texts: int = 2048  # inputs per request (413)
    max_body_bytes: int = 8 << 20  # per body (413, and the connection is closed)
    body_seconds: float = 30.0  # to send a whole body (408)
    max_header_bytes: int = 32 << 10  # the request line and headers together (431)
    header_seconds: float = 10.0  # to send them, from the first byte of a request (408, or the socket is closed)
    idle_seconds: float = 5.0  # a connection with no request in progress is closed after this
    max_connections: int = 1024  # open at once; one more gets a 503 and is closed
    write_seconds: float = 30.0  # for a client to read an answer; then the connection is dropped
    drain_seconds: float = 30.0  # after SIGTERM or SIGINT, to finish what is in flight (then 503)

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{field.name} must be a positive number, got {value!r}")
            if field.type == "int" and not isinstance(value, int):
                raise ValueError(f"{field.name} must be an integer, got {value!r}")
