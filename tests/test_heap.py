"""minibert/fast/heap.py: free heap pages go back to the OS, where the C library can do it."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from minibert.fast import heap


def resident_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def glibc():
    try:
        return sys.platform.startswith("linux") and bool(ctypes.CDLL(None).gnu_get_libc_version)
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not glibc(), reason="malloc_trim is glibc's")
def test_release_free_memory_shrinks_a_fragmented_heap():
    # 64 KiB blocks come from the heap, not from mmap; keeping every 8th alive pins the heap's top, so
    # free() alone gives nothing back.
    blocks = [np.ones(16384, np.float32) for _ in range(3000)]  # about 190 MiB
    kept = blocks[::8]
    del blocks
    before = resident_mib()
    assert heap.release_free_memory() is True
    after = resident_mib()
    assert before - after > 100, (before, after)
    assert all(float(b[0]) == 1.0 for b in kept)  # what is alive stays


def test_without_malloc_trim_it_does_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_malloc_trim", lambda: None)
    assert heap.release_free_memory() is False
