"""Handing the C heap's free pages back to the operating system between chunks of a long run.

A long `encode_stream` allocates and frees tensors of many sizes (the attention scores of eight texts of
256 tokens take 25 MB, a batch of short texts a few hundred KB) from two worker threads. glibc's malloc
keeps freed blocks for reuse, and as the sizes vary its heaps fragment: resident memory crept from
553 MiB after the first chunk to 813 MiB after the eleventh while the live data stayed the same
(22,000 generated lines, chunks of 2,048, measured on a 2-core Xeon). `malloc_trim(0)` gives every free
page of every arena back, wherever it lies; with it after each chunk the peak stopped growing after the
fifth chunk (777 MiB through 44,000 lines), and the run was no slower.

What still grows a little is oneDNN's primitive cache (a compiled kernel for each new product shape,
1,024 at most, ONEDNN_PRIMITIVE_CACHE_CAPACITY). It is bounded: a run over 110,000 generated lines peaked
at 819 MiB, one over 1.1 million at 860 MiB, reached in its first forty minutes of eighty.

Where the C library has no malloc_trim (it is glibc's) `release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process already runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the C heap's free pages to the OS; True if this C library can (glibc), else False."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
