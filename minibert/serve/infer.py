"""`Infer`: what the server does with an admitted request, shaped like text-embeddings-inference's
`core/src/infer.rs`. Admission is here: `Admission` counts the requests in progress in the whole server
(--max-concurrent-requests), and each model's Infer refuses work while its queue is full (`check_queue`:
--max-queue-seconds, beside the queue it protects). An Infer owns the queue that feeds its model's
thread (request batches of one output at a time: pooled vectors, token vectors, logits or sparse weights)
and the engine's finishing of each request's vectors (normalisation); the app's worker threads parse,
tokenize and serialise off the event loop (app.py). The HTTP routes call it and never touch the model.

Ownership of a request's permit: taken after its body has been read, released when its answer has been
handed to the connection (or the request failed), so an answer a client never reads keeps counting
against the limits until the write timeout drops it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minibert.engine.core import InputTooLong
from minibert.serve.api import Refused
from minibert.serve.limits import Limits
from minibert.serve.queue import Queue, Stopped

# Work smaller than this (body bytes, text characters, or floats to write) runs on the event loop itself: a
# few microseconds to a fraction of a millisecond, where a hand-over to a worker thread and back costs more.
INLINE_BELOW = 16384


def input_size(inputs: list) -> int:
    """A request's inputs in characters (token ids counted as 8), to choose where they are tokenized."""
    return sum(len(x) if isinstance(x, str) else 8 * len(x) for x in inputs)


class Admission:
    """--max-concurrent-requests, for the whole server: a request holds a Permit from when its body has been
    read until its answer has been handed to the connection."""

    def __init__(self, limits: Limits):
        self.limits, self.admitted = limits, 0

    def try_acquire_permit(self) -> Permit:
        """A permit for one request, or a 429 when --max-concurrent-requests are already admitted."""
        if self.admitted >= self.limits.max_concurrent_requests:
            raise Refused(
                429, f"{self.admitted} requests in progress, the most this server takes", headers={"Retry-After": "1"}
            )
        return Permit(self)


class Permit:
    """One admitted request's place; released once (a context manager, or `release()`)."""

    def __init__(self, admission: Admission):
        self.admission, self.held = admission, True
        admission.admitted += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.admission.admitted -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Infer:
    """An Engine behind a queue, with admission. `model_thread` is the one thread that runs every forward
    (the thread the model was loaded in). `forward(encodings,
    output)` computes one request batch's rows of an output (serve/models.py has one per kind of model);
    by default the engine's pooled vectors, not normalised ("pooled")."""

    def __init__(self, engine, limits: Limits, model_thread: ThreadPoolExecutor, metrics=None, forward=None):
        self.engine, self.limits, self.metrics = engine, limits, metrics
        if forward is None:
            raw = engine.options(normalize=False)  # the queue computes pooled vectors; each request finishes its own

            def forward(encodings, output):
                return engine.backend.to_numpy(engine.embed(encodings, raw))

        self.queue = Queue(forward, limits.max_batch_tokens, model_thread, metrics)

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()

    def check_queue(self) -> None:
        """A 429 when the work already queued would take --max-queue-seconds or more (at the speed of recent
        request batches)."""
        wait, limit = self.queue.wait_seconds(), self.limits.max_queue_seconds
        if wait >= limit:
            raise Refused(
                429,
                f"the queued work would take {wait:.2f} s, over this server's {limit:g} s limit",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    def tokenize(self, inputs: list, options) -> list:
        """The model inputs of one request; a text too long with truncate off is a 422 naming it, a text that
        cannot be tokenized (not valid Unicode) a 400. Called in a worker thread, or in place when small."""
        try:
            return self.engine.tokenize(inputs, options)[0]
        except InputTooLong as e:
            raise Refused(422, str(e), "input") from None
        except (ValueError, TypeError) as e:
            raise Refused(400, str(e), "input") from None

    async def compute(self, encodings: list, output: str = "pooled"):
        """One request's rows of `output`, computed in request batches with other requests'."""
        try:
            return await self.queue.submit(encodings, output)
        except Stopped:
            raise Refused(503, "the server stopped before this request was computed (its drain time was up)") from None

    async def embed(self, encodings: list, options) -> np.ndarray:
        """The finished (normalised where `options` say) vectors of one request's model inputs."""
        return self.engine.finish(await self.compute(encodings), options)
