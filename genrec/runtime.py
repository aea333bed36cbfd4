"""Process-wide settings that the command line applies before any work.

`keep_freed_memory()`: PyTorch's CPU allocator has no cache of its own, it asks malloc for every tensor. glibc
serves large requests with a fresh mmap and hands freed memory back to the kernel, so a training step or an
evaluation batch that allocates the same large tensors again pays for page faults and zero-filled pages each time
(PyTorch's CPU tuning guide recommends jemalloc or tcmalloc for the same reason). Keeping freed memory in the
heap makes those allocations reuse warm pages: on this project's 2-core machine a full-catalogue validation pass of
the Beauty recipes takes a fifth (SASRec) to a third (HSTU) less time and a training step 7-10% less
(`benchmarks/allocator.py` prints the comparison). The cost is that the process keeps its peak memory until it
exits, which a training or evaluation command does anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

# The largest mmap threshold glibc accepts on 64-bit: bigger requests still get their own mmap.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of free memory at the top of the heap
TOP_PAD = 64 * 2**20  # grow the heap in steps of 64 MiB

OPT_OUT = "GENREC_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse; True when it was set.

    Does nothing (False) off Linux/glibc, when `GENREC_KEEP_FREED_MEMORY=0`, or when the user already tunes malloc
    through its own `MALLOC_*_` environment variables (or preloads another allocator) - their choice wins.
    """
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0":
        return False
    if any(k.startswith("MALLOC_") for k in os.environ) or "LD_PRELOAD" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    return all(mallopt(param, value) == 1 for param, value in settings)
