"""The server's queue: every admitted request's inputs wait here, and one worker hands them to the model
thread as *request batches* of at most `max_batch_tokens` real tokens, oldest request first; the engine
runs each request batch as micro-batches of similar length (minibert/engine/core.py). A request with
more texts than a request batch holds is split across several, never refused; a text's vector does not
depend on the texts it was batched with (within 1e-6 in float32; int8 vectors depend a little on their
batch, see minibert/fast/quantize.py).

The forward runs in one thread, the one the model was loaded in: torch's OpenMP threads belong to the
thread that first ran an operation, and a second thread running torch made one short query take 13.6 ms
instead of 5.8 (measured, 2-core AMD EPYC with AVX-512). So the event loop never waits for a forward. A
request whose client has gone is dropped before its texts are computed. Every 2 s, between request
batches, the C heap's free pages are handed back (minibert/fast/heap.py), so that a server under load
for hours does not creep in memory.

`wait_seconds()` is the time the queued work will take, from what recent request batches of each size
took (BatchCost): admission under --max-queue-seconds (minibert/serve/infer.py) rests on it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Stopped(Exception):
    """The server stopped (its drain time was up) before this request's texts were computed."""


@dataclass
class Job:
    """One request's model inputs, waiting for their rows of one output (pooled vectors, token vectors,
    logits or sparse weights: what the model's forward gives for `output`)."""

    encodings: list
    future: asyncio.Future
    output: str = "pooled"
    queued: float = field(default_factory=time.perf_counter)
    parts: list = field(default_factory=list)  # the rows computed so far, a piece per request batch
    done: int = 0  # texts computed so far
    cancelled: bool = False
    tokens: list = field(default_factory=list)  # each text's token count


class BatchCost:
    """seconds = overhead + per_token * tokens, fitted by least squares to recent request batches (their
    sums decay by `decay` per batch, so the fit follows the load). A batch's fixed cost (Python, the
    kernels' start-up) dominates a short query, its tokens a document: one rate per token from short
    queries would make a queue of many short requests, computed together, look many times too long."""

    def __init__(self, decay: float = 0.95):
        self.decay = decay
        self.n = self.t = self.s = self.tt = self.ts = 0.0  # decayed count and sums of tokens, seconds, t^2, t*s

    def add(self, tokens: int, seconds: float) -> None:
        d = self.decay
        self.n, self.t, self.s = d * self.n + 1, d * self.t + tokens, d * self.s + seconds
        self.tt, self.ts = d * self.tt + tokens * tokens, d * self.ts + tokens * seconds

    def fit(self) -> tuple[float, float]:
        """(overhead seconds per batch, seconds per token); (0, 0) before any batch."""
        if self.n == 0:
            return 0.0, 0.0
        mean_t, mean_s = self.t / self.n, self.s / self.n
        var = self.tt / self.n - mean_t * mean_t
        if var <= 1e-9 * max(1.0, mean_t * mean_t):  # batches of one size: all of it per token
            return 0.0, mean_s / max(mean_t, 1.0)
        per_token = max(0.0, (self.ts / self.n - mean_t * mean_s) / var)
        return max(0.0, mean_s - per_token * mean_t), per_token

    def seconds(self, tokens: int, batches: int) -> float:
        overhead, per_token = self.fit()
        return batches * overhead + tokens * per_token


class Queue:
    """The queue and its worker. `submit(encodings, output)` returns one request's rows of that output, in
    input order: an (n, ...) array, or a list where the forward gives one; `forward(encodings, output)`
    computes one request batch (it runs in `thread`). A request batch holds the texts of one output only."""

    def __init__(self, forward, max_batch_tokens: int, thread: ThreadPoolExecutor, metrics=None):
        self.forward = forward
        self.max_batch_tokens = max_batch_tokens
        self.thread, self.metrics = thread, metrics
        self.jobs: list[Job] = []  # waiting or partly computed, oldest first
        self.queued_tokens = 0  # of the texts waiting, kept as jobs come, go and are computed (admission reads it)
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.cost = BatchCost()  # seconds per request batch, as a function of its tokens, from recent ones

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; every request still waiting gets Stopped."""
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        for job in self.jobs:
            if not job.future.done():
                job.future.set_exception(Stopped())
        self.jobs, self.queued_tokens = [], 0

    @property
    def depth(self) -> int:
        """Texts waiting to be computed (read by the metrics scrape)."""
        return sum(len(j.encodings) - j.done for j in self.jobs if not j.cancelled)

    def wait_seconds(self) -> float:
        """How long the work already queued will take: its tokens in request batches of at most
        max_batch_tokens, each costing what recent request batches of that size cost (0 before any)."""
        queued = self.queued_tokens
        if not queued:
            return 0.0
        batches = -(-queued // self.max_batch_tokens)
        return self.cost.seconds(queued, batches)

    async def submit(self, encodings: list, output: str = "pooled"):
        job = Job(encodings, asyncio.get_running_loop().create_future(), output)
        job.tokens = [len(e.ids) for e in encodings]
        self.queued_tokens += sum(job.tokens)
        self.jobs.append(job)
        self.wake.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away: its texts not yet computed are dropped
            self._drop(job)
            raise

    def _drop(self, job: Job) -> None:
        if not job.cancelled:
            job.cancelled = True
            self.queued_tokens -= sum(job.tokens[job.done :])

    def _take(self) -> list[tuple[Job, int, int]]:
        """The next request batch: (job, first, end) slices of the oldest jobs' texts, up to the token budget
        (at least one text, however long)."""
        self.jobs = [j for j in self.jobs if not j.cancelled]
        taken, tokens = [], 0
        for job in self.jobs:
            if taken and job.output != taken[0][0].output:
                continue  # a later request batch computes it
            start = end = job.done
            while end < len(job.encodings):
                n = len(job.encodings[end].ids)
                if tokens + n > self.max_batch_tokens and (taken or end > start):
                    break
                tokens += n
                end += 1
            if end > start:
                taken.append((job, start, end))
            if end < len(job.encodings):
                break  # the budget is spent
        return taken

    async def _run(self) -> None:
        from minibert.fast.heap import release_free_memory

        loop = asyncio.get_running_loop()
        trimmed = time.monotonic()
        while True:
            if time.monotonic() - trimmed > 2.0:  # the C heap's free pages go back every 2 s, busy or idle
                await loop.run_in_executor(self.thread, release_free_memory)
                trimmed = time.monotonic()
            taken = self._take()
            if not taken:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 2.0)
                except asyncio.TimeoutError:
                    pass
                continue
            encodings = [e for job, start, end in taken for e in job.encodings[start:end]]
            tokens = sum(len(e.ids) for e in encodings)
            now = time.perf_counter()
            if self.metrics is not None:
                for job, start, _ in taken:
                    if start == 0:
                        self.metrics.queue_seconds.observe(now - job.queued)
                self.metrics.batch_texts.observe(len(encodings))
                self.metrics.batch_tokens.observe(tokens)
            try:
                rows = await loop.run_in_executor(self.thread, self.forward, encodings, taken[0][0].output)
            except Exception as error:  # a fault of the computation fails the requests in this batch
                for job, _, _ in taken:
                    if not job.future.done():
                        job.future.set_exception(error)
                    self._drop(job)
                continue
            elapsed = time.perf_counter() - now
            self.cost.add(tokens, elapsed)
            if self.metrics is not None:
                self.metrics.batch_seconds.observe(elapsed)
            row = 0
            for job, start, end in taken:
                job.parts.append(rows[row : row + end - start])
                row += end - start
                if not job.cancelled:  # a dropped job's tokens left the count when it was dropped
                    self.queued_tokens -= sum(job.tokens[start:end])
                job.done = end
                if end == len(job.encodings):
                    self.jobs.remove(job)
                    if not job.future.done():
                        job.future.set_result(_joined(job.parts))


def _joined(parts: list):
    """A request's rows from the pieces its request batches computed."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return [row for part in parts for row in part]
