"""Process memory tuning for the data path.

A batch of events arrives as one buffer of a few hundred kilobytes. glibc's malloc serves buffers
above its mmap threshold (128 KB until it adapts) with fresh mappings and trims its heap eagerly, so a
worker used to take about one page fault per 7 KB event (measured: ~100k minor faults per 100k events,
7% of the pipeline's CPU). Raising the thresholds keeps those buffers on the heap and reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20    # buffers below this come from the heap (a batch is at most 8 MB + slack)
TRIM_THRESHOLD = 64 << 20    # free heap kept before it is returned to the system


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (no-op elsewhere); True if applied."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


GC_THRESHOLD0 = 20_000       # allocations between young-generation collections (CPython: 700)


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap on the data path: freeze what start-up and ``setup``
    allocated (modules, the step's tables: never collected, and never scanned again) and collect the
    young generation every 20 k allocations instead of every 700.

    Measured: a worker spent ~5 % of its CPU in ``gc_collect_main`` (every batch builds a few
    containers per event; the full collections rescanned numpy, astropy and the step's objects).
    Events are rarely cyclic, so little garbage waits longer."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, g1, g2)


#: numba's cache of the stages' kernels when NUMBA_CACHE_DIR is unset: `make venv` fills it
#: (``python -m stages.warm``, whose `DEFAULT_CACHE` is the same path: stages cannot import the
#: engine, a test holds the two equal) and every flow process reads it, inline runs included.
NUMBA_CACHE = os.path.join("~", ".cache", "flow-iact", "numba")


def default_numba_cache() -> str:
    """Set NUMBA_CACHE_DIR to `NUMBA_CACHE` unless it is set; returns the directory in use. Call it
    before numba is imported (numba reads the variable once): a process left on numba's default
    (``__pycache__`` beside the sources) compiles the whole chain again, for a minute on 2 cores."""
    return os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser(NUMBA_CACHE))


__all__ = ["NUMBA_CACHE", "default_numba_cache", "tune_gc", "tune_malloc"]
