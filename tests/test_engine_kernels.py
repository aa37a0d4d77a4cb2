"""flow/engine/kernels.py: workers record the jitted kernels they ran; the worker template loads
those from numba's cache before it forks, so a later run's workers start with them in memory."""

from __future__ import annotations

import json
import textwrap

from flow.engine import kernels
from flow.engine.run import RunOptions, run
from flow.observe.summary import EXIT_OK
from tests.steps import read_jsonl
from tests.test_engine_e2e import load

STEPS = '''
import numba
import numpy as np

from flow.graph.step import Stager


@numba.njit(cache=True)
def double(x):
    return x * 2.0


class Double(Stager):
    """value * 2 by a cached kernel; says whether the kernel was in memory before its first call."""

    def setup(self):
        self.preloaded = len(double.overloads)

    def process(self, event):
        event["value"] = float(double(np.float64(event["value"])))
        event["preloaded"] = self.preloaded
        return event
'''

PIPE = """
name: k
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 40}, to: [double]}
  - {name: double, use: "kern_steps:Double", workers: 2, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {fuse: false}
"""


def test_a_later_run_starts_with_the_kernels_an_earlier_one_ran(tmp_path, monkeypatch,
                                                               step_module):
    step_module("kern_steps", textwrap.dedent(STEPS))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))  # the workers' numba cache
    manifest = tmp_path / "cache" / kernels.MANIFEST
    seen = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        out.mkdir()
        graph = load(out, PIPE)
        summary = run(graph, RunOptions(quiet=True, run_dir=str(out / "run")))
        assert summary.exit_code == EXIT_OK
        rows = read_jsonl(str(out / "out.jsonl"))
        assert sorted(r["event"]["value"] for r in rows) == [2.0 * v for v in range(40)]
        seen.append({r["event"]["preloaded"] for r in rows})
        assert json.loads(manifest.read_text()) == {"kern_steps.double": ["(float64,)"]}
    assert seen == [{0}, {1}]   # compiled by the first run's workers, loaded by the template next


def test_nothing_is_recorded_or_loaded_without_a_cache_directory(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert kernels.manifest_path() is None
    assert kernels.record_used() == 0
    assert kernels.load_used() == 0


def test_an_unreadable_manifest_is_an_empty_one(tmp_path):
    bad = tmp_path / kernels.MANIFEST
    bad.write_text("{not json")
    assert kernels.read_manifest(str(bad)) == {}
    bad.write_text("[1, 2]")
    assert kernels.read_manifest(str(bad)) == {}
    assert kernels.read_manifest(str(tmp_path / "missing.json")) == {}
    assert kernels.load_used(str(bad)) == 0


CALLER = '''
import numba


@numba.njit(cache=True)
def double(x):
    return x * 2.0


@numba.njit(cache=True)
def quadruple(x):   # calls the other kernel: compiled fresh, it links the one loaded
    return double(double(x))
'''


def test_a_kernel_compiled_after_the_load_can_call_the_loaded_ones(tmp_path, step_module):
    """The template's kernels are usable as callees: a worker compiling a new kernel (a signature
    no earlier run used) that calls a loaded one links it (numba's own cache load registers it
    with its target context; so must `load_used`)."""
    import os
    import subprocess
    import sys
    step_module("kern_caller", textwrap.dedent(CALLER))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    first = ("import kern_caller; from flow.engine import kernels; kern_caller.double(1.0); "
             "print(kernels.record_used())")
    then = ("import kern_caller; from flow.engine import kernels; print(kernels.load_used()); "
            "print(kern_caller.quadruple(1.5))")
    for code, expected in ((first, ["1"]), (then, ["1", "6.0"])):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == expected
