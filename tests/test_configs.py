"""The shipped pipelines (configs/*.yaml) run as the README says, through the real `flow` command
with router and worker processes, and give exactly what the same pipeline gives `--inline` in one
process: the transport (sockets, batches, shared-memory arrays and blobs, leases) changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tables

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def flow(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "flow.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def event_tables(path: Path) -> dict[str, np.ndarray]:
    """Every event table under /dl1, /dl2 and /simulation, rows sorted by their event keys."""
    out = {}
    with tables.open_file(str(path)) as f:
        for node in f.walk_nodes("/", "Table"):
            name = node._v_pathname
            if not name.startswith(("/dl1", "/dl2", "/simulation")):
                continue
            rows = node.read()
            keys = [k for k in ("obs_id", "event_id", "tel_id") if k in rows.dtype.names]
            if keys:
                rows = rows[np.lexsort([rows[k] for k in reversed(keys)])]
            out[name] = rows
    return out


def assert_same_tables(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, x in a.items():
        y = b[name]
        assert x.dtype == y.dtype and len(x) == len(y), name
        for col in x.dtype.names:
            np.testing.assert_array_equal(x[col], y[col], err_msg=f"{name}:{col}")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(config):
    done = flow("validate", str(config), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: ok (")


def run_both(tmp_path: Path, config: str, *sets: str) -> tuple[dict, dict, dict]:
    """Run `config` with processes and inline; (summary of the process run, tables, tables)."""
    out = {}
    for mode in ("processes", "inline"):
        h5 = tmp_path / f"{mode}.h5"
        summary = tmp_path / f"{mode}.json"
        extra = ["--inline"] if mode == "inline" else ["--no-scale"]
        done = flow("run", config, "--quiet", "--set", f"write.path={h5}", *sets,
                    "--summary-json", str(summary), "--dead-letter", str(tmp_path / "dl.jsonl"),
                    *extra)
        assert done.returncode == 0, f"{mode}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        out[mode] = (json.loads(summary.read_text()), event_tables(h5))
    return out["processes"][0], out["processes"][1], out["inline"][1]


def test_simtel_dl2_on_real_data_processes_equal_inline(tmp_path):
    summary, procs, inline = run_both(tmp_path, "configs/simtel_dl2.yaml")
    assert summary["exit_code"] == 0 and summary["produced"] > 0
    assert summary["unique_consumed"]["write"] == summary["produced"]
    assert "/dl2/event/subarray/geometry/HillasReconstructor" in procs
    assert any(name.startswith("/dl1/event/telescope/parameters/") for name in procs)
    assert_same_tables(procs, inline)


def test_demo_processes_equal_inline(tmp_path):
    summary, procs, inline = run_both(tmp_path, "configs/demo.yaml", "--set", "read.n_events=200")
    assert summary["exit_code"] == 0 and summary["produced"] == 200
    assert summary["unique_consumed"]["write"] == 200
    assert sum(len(t) for name, t in procs.items() if name.startswith("/dl2")) > 0
    assert_same_tables(procs, inline)
