"""flow.memory: malloc tuning of the data-path processes."""

from __future__ import annotations

import platform

from flow.memory import tune_malloc


def test_tune_malloc_applies_on_glibc_and_is_harmless_twice():
    applied = tune_malloc()
    assert applied == (platform.libc_ver()[0] == "glibc")
    assert tune_malloc() == applied
    buf = bytearray(4 << 20)          # a batch-sized buffer still allocates and frees normally
    buf[-1] = 1
    assert len(buf) == 4 << 20 and buf[-1] == 1
