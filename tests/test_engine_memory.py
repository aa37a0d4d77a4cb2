"""flow.engine.memory: malloc tuning of the data-path processes."""

from __future__ import annotations

import platform
from pathlib import Path

from flow.engine.memory import tune_malloc


def test_tune_malloc_applies_on_glibc_and_is_harmless_twice():
    applied = tune_malloc()
    assert applied == (platform.libc_ver()[0] == "glibc")
    assert tune_malloc() == applied
    buf = bytearray(4 << 20)          # a batch-sized buffer still allocates and frees normally
    buf[-1] = 1
    assert len(buf) == 4 << 20 and buf[-1] == 1


def test_tune_gc_freezes_and_raises_the_young_threshold():
    import gc

    from flow.engine.memory import GC_THRESHOLD0, tune_gc
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] == GC_THRESHOLD0 and gc.get_freeze_count() > 0
        junk = []
        junk.append(junk)                 # a cycle made after the freeze is still collected
        del junk
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_run_gives_back_the_callers_gc_settings(tmp_path):
    import gc

    from tests.test_engine_e2e import go
    before = gc.get_threshold()
    summary = go(tmp_path, """
        name: gc
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 20}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """)
    assert summary.exit_code == 0 and summary.consumed == {"write": 20}
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_every_flow_process_reads_numba_cache_from_the_same_place(tmp_path):
    """The CLI (an inline run compiles in this process), workers and the template default to the
    cache `make venv` fills; an explicit NUMBA_CACHE_DIR wins."""
    import os
    import subprocess
    import sys
    probe = ("import sys; from flow.cli.app import main; main(['validate', 'configs/demo.yaml']); "
             "import numba; print(numba.config.CACHE_DIR)")
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == str(tmp_path / ".cache" / "flow-iact" / "numba")
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.splitlines()[-1] == str(tmp_path / "mine")
