"""Batching across requests: every request's texts join one queue, and one worker computes them in
batches of at most `max_batch_tokens` real tokens, longest first, as Encoder.encode does (its batches side
by side on the CPU cores). A request with more texts than a batch holds is split across batches, never
refused; a text's vector does not depend on the texts it was batched with (batch invariance, within 1e-6).

Every 2 s, between forwards, the C heap's free pages are handed back (minibert/fast/heap.py), so that a
server under load for hours does not creep in memory as the corpus stream once did. The forward runs in
one worker thread, so the event loop that reads requests and writes answers never
waits for it; a request whose client has gone is dropped before its texts are computed. That thread
must be the one the model was loaded in: torch's OpenMP threads belong to the thread that first ran an
operation, and a second thread running torch made one short query take 13.6 ms instead of 5.8 (measured,
2-core AMD EPYC with AVX-512).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Job:
    """One request's tokenized inputs, waiting for their vectors (raw: pooled, not normalised)."""

    encodings: list
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    vectors: np.ndarray | None = None
    done: int = 0  # texts computed so far
    cancelled: bool = False

    @property
    def tokens(self) -> int:
        return sum(len(e.ids) for e in self.encodings)


class Batcher:
    """The queue and its worker. `submit(encodings)` returns the (n, H) float32 vectors of one request."""

    def __init__(self, encoder, max_batch_tokens: int = 16384, metrics=None, thread: ThreadPoolExecutor | None = None):
        self.encoder = encoder
        self.max_batch_tokens = max_batch_tokens
        self.metrics = metrics
        self.jobs: list[Job] = []  # waiting or partly computed, oldest first
        self.wake = asyncio.Event()
        self.pool = thread or ThreadPoolExecutor(1, thread_name_prefix="minibert-forward")  # the model's thread
        self.worker: asyncio.Task | None = None
        self.seconds_per_token: float | None = None  # of recent forwards (an average that follows the load)

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.pool.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Texts waiting to be computed."""
        return sum(len(j.encodings) - j.done for j in self.jobs)

    def wait_seconds(self) -> float:
        """How long the work already queued will take, at the speed of recent forwards (0 before any)."""
        if self.seconds_per_token is None:
            return 0.0
        queued = sum(len(e.ids) for j in self.jobs if not j.cancelled for e in j.encodings[j.done :])
        return queued * self.seconds_per_token

    async def submit(self, encodings: list) -> np.ndarray:
        job = Job(encodings, asyncio.get_running_loop().create_future())
        job.vectors = np.empty((len(encodings), self.encoder.dim), np.float32)
        self.jobs.append(job)
        self.wake.set()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away: its texts not yet computed are dropped
            job.cancelled = True
            raise

    def _take(self) -> list[tuple[Job, int, int]]:
        """The next batch: (job, first, end) slices of the oldest jobs' texts, up to the token budget (at
        least one text, however long)."""
        self.jobs = [j for j in self.jobs if not j.cancelled]
        taken, tokens = [], 0
        for job in self.jobs:
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

    def _forward(self, encodings: list) -> np.ndarray:
        e = self.encoder
        out = e.embed_encodings(encodings, pooling=e.pooling, normalize=False, batch_size=64, show_progress=False)
        return out.cpu().numpy()

    async def _run(self) -> None:
        from minibert.fast.heap import release_free_memory

        loop = asyncio.get_running_loop()
        trimmed = time.monotonic()
        while True:
            if time.monotonic() - trimmed > 2.0:  # the C heap's free pages go back every 2 s, busy or idle
                await loop.run_in_executor(self.pool, release_free_memory)
                trimmed = time.monotonic()
            taken = self._take()
            if not taken:
                self.wake.clear()
                if not self.jobs:
                    try:
                        await asyncio.wait_for(self.wake.wait(), 2.0)
                    except asyncio.TimeoutError:
                        pass
                continue
            encodings = [e for job, start, end in taken for e in job.encodings[start:end]]
            now = time.perf_counter()
            if self.metrics is not None:
                for job, start, _ in taken:
                    if start == 0:
                        self.metrics.queue_seconds.observe(now - job.queued)
                self.metrics.batch_texts.observe(len(encodings))
                self.metrics.batch_tokens.observe(sum(len(e.ids) for e in encodings))
            try:
                vectors = await loop.run_in_executor(self.pool, self._forward, encodings)
            except Exception as error:  # a fault of the computation fails the requests in this batch
                for job, _, _ in taken:
                    if not job.future.done():
                        job.future.set_exception(error)
                    job.cancelled = True
                continue
            elapsed = time.perf_counter() - now
            per_token = elapsed / max(1, sum(len(e.ids) for e in encodings))
            old = self.seconds_per_token
            self.seconds_per_token = per_token if old is None else 0.8 * old + 0.2 * per_token
            if self.metrics is not None:
                self.metrics.forward_seconds.observe(elapsed)
            row = 0
            for job, start, end in taken:
                job.vectors[start:end] = vectors[row : row + end - start]
                row += end - start
                job.done = end
                if end == len(job.encodings):
                    self.jobs.remove(job)
                    if not job.future.done():
                        job.future.set_result(job.vectors)
