"""stages.warm: after it, a demo run with processes finds every numba kernel in the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stages.warm import DEFAULT_CACHE, copied

ROOT = Path(__file__).resolve().parent.parent


def test_copied_is_deep_and_read_only_on_request():
    event = {"tels": {1: {"image": np.arange(3.0)}}, "ids": [np.zeros(2)], "n": 1}
    frozen = copied(event, readonly=True)
    assert not frozen["tels"][1]["image"].flags.writeable and not frozen["ids"][0].flags.writeable
    assert frozen["tels"][1]["image"] is not event["tels"][1]["image"] and frozen["n"] == 1
    loose = copied(frozen, readonly=False)
    assert loose["tels"][1]["image"].flags.writeable
    np.testing.assert_array_equal(loose["tels"][1]["image"], event["tels"][1]["image"])


def test_default_cache_is_the_one_flow_workers_use():
    """stages cannot import the engine: the two defaults are written twice and held equal here."""
    from flow.engine.memory import NUMBA_CACHE
    assert Path(NUMBA_CACHE) == DEFAULT_CACHE


def cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(cache)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc")}


@pytest.mark.slow
def test_after_warm_the_demo_compiles_nothing(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "PYTHONPATH": str(ROOT)}
    warm = subprocess.run([sys.executable, "-m", "stages.warm", "--events", "3"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert "numba kernels compiled and cached" in warm.stdout
    before = cache_files(tmp_path / "numba")
    modules = {Path(k).name.split(".")[0] for k in before}
    assert {"calib", "cleaning", "hillas", "image", "timing"} <= modules, modules
    run = subprocess.run([sys.executable, "-m", "flow.cli", "run", str(ROOT / "configs/demo.yaml"),
                          "--quiet", "--set", "read.n_events=30", "--set",
                          f"write.path={tmp_path / 'dl2.h5'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    after = cache_files(tmp_path / "numba")
    assert after == before, "the demo compiled kernels stages.warm did not: " + ", ".join(
        sorted(k for k in after if after[k] != before.get(k)))
