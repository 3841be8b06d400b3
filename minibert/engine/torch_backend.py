"""The engine's torch backend: a BertModel's forward on padded batches, and the micro-batches of one call
side by side on the CPU cores, one thread each."""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager

import torch

from minibert.model import BertModel


class TorchBackend:
    """`model` (a BertModel, eval mode) behind the engine's backend interface (minibert/engine/core.py).
    `fast`: on CPU, several micro-batches run side by side, one per core (see `map`). `head`: a module the
    token vectors go through first (SparseEncoder's masked-LM head)."""

    xp = torch

    def __init__(self, model: BertModel, fast: bool = True, head=None):
        self.model, self.fast = model.eval(), fast
        self.head = head  # a masked-LM head: the forward gives its (B, L, V) logits in place of the token vectors
        self.vocabulary = head is not None
        self.config = model.config
        self.has_pooler = model.pooler is not None
        self.device = next(model.parameters()).device  # looked up once, not per batch
        self._pool = None  # worker threads for micro-batches side by side (map)
        _warn_if_slow_bfloat16(model)
        global _models_made
        _models_made = True

    def forward(self, arrays: dict, pooler: bool):
        """(h (B, L, H) float32, m (B, L, 1), pooler output or None) for padded numpy `arrays`."""
        with torch.inference_mode():
            ids, types, mask = (
                torch.from_numpy(arrays[k]).to(self.device) for k in ("input_ids", "token_type_ids", "attention_mask")
            )
            # Texts of one length need no padding mask, and attention runs faster without one.
            output = self.model(ids, None if bool(mask.all()) else mask, types, output_pooler=pooler)
            h = output.last_hidden_state if self.head is None else self.head(output.last_hidden_state)
            h = h.float()
            return (
                h,
                mask.unsqueeze(-1).to(h.dtype),
                None if output.pooler_output is None else output.pooler_output.float(),
            )

    def map(self, fn, batches: list):
        """fn over the micro-batches, as they finish. On CPU, one batch per core, each on a single thread:
        this beats splitting every operation across the cores (10% on the benchmark corpus with 2 cores),
        and gives the same numbers."""
        _check_not_forked()
        parallel = self.fast and self.device.type == "cpu" and len(batches) > 1
        with _cpu_cores(parallel) as cores:
            if cores <= 1:
                yield from map(fn, batches)
                return
            yield from self._workers(cores).map(fn, batches)

    def _workers(self, cores: int):
        """The backend's worker threads, one per core, each running torch on one thread: made on first use
        and kept (a server computes thousands of batches)."""
        with _threads_lock:
            if self._pool is None or self._pool._max_workers != cores:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(
                    cores, thread_name_prefix="minibert-batch", initializer=torch.set_num_threads, initargs=(1,)
                )
            return self._pool

    def empty(self, n: int, dim: int):
        return torch.empty(n, dim, dtype=torch.float32, device=self.device)

    def to_numpy(self, x):
        return x.cpu().numpy()


# After fork(), torch's OpenMP thread pool is gone from the child, and the child's first parallel
# operation waits for it forever (plain torch does the same). A backend made before a fork knows this.
_models_made = False
_forked_after_load = False


def _after_fork_in_child():
    global _forked_after_load
    _forked_after_load = _models_made


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_not_forked():
    if _forked_after_load and torch.get_num_threads() > 1:
        raise RuntimeError(
            "this process is a fork() of one that had already loaded a minibert model, and torch's thread pool "
            "does not survive fork(): computing here would hang. Start worker processes with multiprocessing's "
            "'spawn' or 'forkserver' method (multiprocessing.get_context('spawn')), or call "
            "torch.set_num_threads(1) in the child first"
        )


_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 0


@contextmanager
def _cpu_cores(parallel: bool = True):
    """The number of worker threads for one call (1 when not `parallel`): torch's thread count as it was
    before any concurrent call began. A worker's torch.set_num_threads(1) also sets the count that threads
    started later begin with, so each caller puts the saved count back on its way out."""
    global _threads_users, _threads_saved
    if not parallel:
        yield 1
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
        _threads_users += 1
        cores = _threads_saved
    try:
        yield cores
    finally:
        with _threads_lock:
            _threads_users -= 1
            torch.set_num_threads(cores)


_warned_bfloat16 = False


def _warn_if_slow_bfloat16(model):
    global _warned_bfloat16
    from minibert.fast.cpu import features

    param = next(model.parameters())
    if param.dtype == torch.bfloat16 and param.device.type == "cpu" and not features().native_bf16:
        if not _warned_bfloat16:
            _warned_bfloat16 = True
            warnings.warn(
                f"this CPU ({features().describe()}) has no bfloat16 dot-product instructions "
                "(AVX512_BF16 or AMX): bfloat16 computes correctly here but is no faster than "
                "float32, and often slower",
                stacklevel=4,
            )
