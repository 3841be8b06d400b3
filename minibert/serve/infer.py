"""`Infer`: what the server does with an admitted request, shaped like text-embeddings-inference's
`core/src/infer.rs`. It owns the permits (`try_acquire_permit`: --max-concurrent-requests and
--max-queue-seconds, both checked here, beside the queue they protect), the worker threads that parse,
tokenize and serialise off the event loop, the queue that feeds the model thread, and the engine's
finishing of each request's vectors (normalisation). The HTTP routes (app.py) and Ray Serve
(ray_serve.py) call it; neither touches the model.

Ownership of a request's permit: taken after its body has been read, released when its answer has been
handed to the connection (or the request failed), so an answer a client never reads keeps counting
against the limits until the write timeout drops it."""

from __future__ import annotations

import asyncio
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


class Permit:
    """One admitted request's place; released once (a context manager, or `release()`)."""

    def __init__(self, infer: Infer):
        self.infer, self.held = infer, True
        infer.admitted += 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.infer.admitted -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Infer:
    """An Engine behind a queue, with admission. `model_thread` is the one thread that runs every forward
    (the thread the model was loaded in); `workers` threads parse, tokenize and serialise."""

    def __init__(self, engine, limits: Limits, model_thread: ThreadPoolExecutor, metrics=None, workers: int = 2):
        self.engine, self.limits, self.metrics = engine, limits, metrics
        raw = engine.options(normalize=False)  # the queue computes pooled vectors; each request finishes its own

        def forward(encodings):
            return engine.backend.to_numpy(engine.embed(encodings, raw))

        self.queue = Queue(forward, engine.dim, limits.max_batch_tokens, model_thread, metrics)
        self.workers = ThreadPoolExecutor(workers, thread_name_prefix="minibert-io")
        self.admitted = 0

    def start(self) -> None:
        self.queue.start()

    async def stop(self) -> None:
        await self.queue.stop()
        self.workers.shutdown(wait=False, cancel_futures=True)

    def try_acquire_permit(self) -> Permit:
        """A permit for one request, or a 429 saying which limit is reached: the requests already admitted
        (--max-concurrent-requests), or the work already queued (--max-queue-seconds, at the speed of recent
        request batches)."""
        limits = self.limits
        if self.admitted >= limits.max_concurrent_requests:
            raise Refused(
                429, f"{self.admitted} requests in progress, the most this server takes", headers={"Retry-After": "1"}
            )
        wait = self.queue.wait_seconds()
        if wait >= limits.max_queue_seconds:
            raise Refused(
                429,
                f"the queued work would take {wait:.2f} s, over this server's {limits.max_queue_seconds:g} s limit",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        return Permit(self)

    async def run(self, fn, *args):
        """fn(*args) in a worker thread, so that parsing, tokenizing and serialising never hold the event loop
        (the app runs work under INLINE_BELOW in place: a thread hand-over costs more than a short query's)."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, fn, *args)

    def tokenize(self, inputs: list, options) -> list:
        """The model inputs of one request; a text too long with truncate off is a 422 naming it, a text that
        cannot be tokenized (not valid Unicode) a 400. Called in a worker thread, or in place when small."""
        try:
            return self.engine.tokenize(inputs, options)[0]
        except InputTooLong as e:
            raise Refused(422, str(e), "input") from None
        except (ValueError, TypeError) as e:
            raise Refused(400, str(e), "input") from None

    async def embed(self, encodings: list, options) -> np.ndarray:
        """The finished (normalised where `options` say) vectors of one request's model inputs."""
        try:
            raw = await self.queue.submit(encodings)
        except Stopped:
            raise Refused(503, "the server stopped before this request was computed (its drain time was up)") from None
        return self.engine.finish(raw, options)
