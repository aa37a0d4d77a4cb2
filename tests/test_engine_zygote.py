"""flow/engine/zygote.py: workers forked from a warm template, with spawn as the fallback."""

from __future__ import annotations

import os

import psutil
import pytest

from flow.engine.launcher import LocalLauncher
from flow.engine.run import RunOptions, run
from flow.engine.zygote import ForkedProcess, Zygote, preload_modules, wants_kernels, yaml_modules
from flow.observe.summary import EXIT_OK
from tests.steps import read_jsonl
from tests.test_engine_e2e import load

PIPE = """
name: z
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 500}, to: [add]}
  - {name: add, use: "tests.steps:AddOne", workers: 2, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {start_method: METHOD}
"""


def pids_by_step(router) -> dict:
    return {w.step: w.pid for w in router.workers.values()}


@pytest.mark.parametrize("method", ["zygote", "spawn"])
def test_workers_start_from_the_template_or_as_fresh_interpreters(tmp_path, method):
    graph = load(tmp_path, PIPE.replace("METHOD", method))
    parents: dict = {}

    def on_start(router, publisher):
        parents["launcher"] = router.launcher
        parents["order"] = [w.step for w in router.workers.values()]

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"), on_start=on_start))
    assert summary.exit_code == EXIT_OK
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    assert sorted(r["event"]["value"] for r in rows) == list(range(1, 501))
    launcher = parents["launcher"]
    assert launcher.start_method == method and launcher.started == 4
    assert launcher.zygote is None     # the template is stopped with the run
    # the consumer and the producer first: their set-up overlaps the template's kernel loading
    assert parents["order"] == ["write", "read", "add", "add"]


def test_a_forked_worker_is_a_child_of_the_template_not_of_the_router(tmp_path):
    z = Zygote(preload_modules(None), dict(os.environ))
    try:
        # no router listens: the worker waits for its CONFIG, then exits on its own
        proc = z.start(f"ipc://{tmp_path}/nobody.sock", "w.0", "nothing", None)
        assert isinstance(proc, ForkedProcess) and proc.poll() is None
        child = psutil.Process(proc.pid)
        assert child.ppid() == z.proc.pid != os.getpid()
        assert not child.threads() or len(child.threads()) <= 4   # the zmq I/O thread and few more
        proc.kill()
        proc.wait(5)
        assert proc.poll() is not None
    finally:
        z.close()
    assert z.proc.poll() is not None


def test_requests_return_at_once_and_their_pids_arrive_in_order(tmp_path):
    z = Zygote(preload_modules(None), dict(os.environ))
    try:   # written while the template still imports: none of them waits for it
        procs = [z.start(f"ipc://{tmp_path}/nobody.sock", f"w.{i}", "nothing", None, kind=kind)
                 for i, kind in enumerate(("consumer", "producer", "stager"))]
        assert all(p.poll() is None for p in procs)
        pids = [p.pid for p in procs]
        assert len(set(pids)) == 3
        assert all(psutil.Process(pid).ppid() == z.proc.pid for pid in pids)
        for proc in procs:
            proc.kill()
            assert proc.wait(5) is not None
    finally:
        z.close()


def test_a_request_the_template_never_answers_is_a_worker_that_exited(tmp_path):
    z = Zygote(preload_modules(None), dict(os.environ))
    try:
        proc = z.start(f"ipc://{tmp_path}/nobody.sock", "w.0", "nothing", None, kind="stager")
        z.proc.kill()   # still importing: it never answers
        z.proc.wait(5)
        assert proc.wait(5) == -1 and proc.pid is None and proc.error
        proc.kill()     # nothing to kill, no error
        with pytest.raises(OSError, match="exited"):
            z.start(f"ipc://{tmp_path}/nobody.sock", "w.1", "nothing", None)
    finally:
        z.close()


def test_only_stagers_wait_for_the_kernels():
    assert wants_kernels({"kind": "stager"}) and wants_kernels({})
    assert not wants_kernels({"kind": "producer"}) and not wants_kernels({"kind": "consumer"})


def test_the_template_preloads_the_modules_of_the_steps():
    graph = load_like_demo()
    modules = preload_modules(graph)
    assert modules[:3] == ["numpy", "zmq", "msgpack"]
    assert "stages.calib" in modules and "stages.io.hdf5" in modules


def test_the_template_started_from_the_files_text_preloads_what_the_graph_would():
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml")
    with open(path) as f:
        text = f.read()
    assert yaml_modules(text) == preload_modules(load_like_demo())
    spawn = text.replace("cpu_budget: 0}", "cpu_budget: 0, start_method: spawn}")
    assert spawn != text and yaml_modules(spawn) is None
    assert yaml_modules("just: [a, list]") is None and yaml_modules("{{{") is None


def test_a_file_that_fails_validation_leaves_no_template_behind(tmp_path, capsys):
    from flow.cli.app import main
    bad = tmp_path / "bad.yaml"
    bad.write_text(PIPE.replace("METHOD", "zygote").replace("n: 500", "n: many"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert main(["run", str(bad), "--quiet"]) != 0
    assert "bad.yaml" in capsys.readouterr().err
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], left


def load_like_demo():
    from flow.graph.loader import load_graph
    return load_graph(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml"))


class GoneTemplate:
    """A template that has exited: every request fails."""

    def start(self, *args, **kwargs):
        raise OSError("the worker template exited")

    def close(self) -> None:
        pass


def test_a_template_that_is_gone_falls_back_to_spawn(tmp_path):
    launcher = LocalLauncher(f"ipc://{tmp_path}/nobody.sock", start_method="zygote")
    launcher.zygote = GoneTemplate()
    h = launcher.start("nothing")
    try:
        assert launcher.start_method == "spawn" and launcher.zygote is None
        assert h.process is not None and not isinstance(h.process, ForkedProcess)
        assert h.alive()
    finally:
        h.kill()
        h.join(5)
    assert not h.alive()


SLOW_CONTEXT = """
name: slow-context
steps:
  - {name: read, use: "tests.template_probe:SlowContext", with: {n: 20, context_s: 1.5, fail: FAIL},
     to: [add]}
  - {name: add, use: "tests.steps:AddOne", to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
"""


def test_the_template_imports_while_the_producers_build_their_context(tmp_path, monkeypatch):
    probe = tmp_path / "probe.txt"
    monkeypatch.setenv("FLOW_PROBE_FILE", str(probe))
    graph = load(tmp_path, SLOW_CONTEXT.replace("FAIL", "false"))
    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run")))
    assert summary.exit_code == EXIT_OK and summary.consumed == {"write": 20}
    rows = [line.split() for line in probe.read_text().splitlines()]
    context = [r for r in rows if r[0] == "context"]
    assert len(context) == 1 and int(context[0][1]) == os.getpid()   # built here, by the router
    imports = [r for r in rows if r[0] == "import" and int(r[1]) != os.getpid()]
    assert imports, "the template imported the step's module"
    # the template had the module imported while the context was still being built
    assert float(imports[0][2]) < float(context[0][3])


def test_a_context_that_fails_stops_the_template_it_started(tmp_path):
    graph = load(tmp_path, SLOW_CONTEXT.replace("FAIL", "true").replace("1.5", "0.5"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(Exception, match="cannot read the subarray"):
        run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run")))
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], left


def test_flow_run_prints_no_warning_of_the_template(tmp_path):
    """`python -m flow.engine.zygote` must not find itself imported already (runpy's
    RuntimeWarning on every run): `flow.engine.run` imports it only when a run starts."""
    import subprocess
    import sys
    (tmp_path / "g.yaml").write_text(PIPE.replace("METHOD", "zygote").replace("n: 500", "n: 5")
                                     .replace("OUT/", f"{tmp_path}/"))
    done = subprocess.run([sys.executable, "-m", "flow.cli", "run", str(tmp_path / "g.yaml"),
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_a_run_refused_after_its_context_stops_the_template_too(tmp_path):
    """A non-loopback bind without keys is refused once the template is up: it must not stay."""
    graph = load(tmp_path, SLOW_CONTEXT.replace("FAIL", "false").replace("1.5", "0.1"))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(Exception, match="(?i)curve|keys|insecure"):
        run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"), bind="tcp://0.0.0.0:0"))
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], left


ATEXIT_STEP = '''
import atexit
import os

from flow.graph.step import Stager


class MarkAtExit(Stager):
    """Registers an atexit handler that writes a file named after its pid in ``mark_dir``."""

    def setup(self):
        mark = os.path.join(os.environ["MARK_DIR"], str(os.getpid()))
        atexit.register(lambda: open(mark, "w").write("exited"))

    def process(self, event):
        return event
'''


def test_a_forked_worker_runs_its_atexit_handlers_on_the_fast_exit(tmp_path, monkeypatch,
                                                                  step_module):
    step_module("atexit_steps", ATEXIT_STEP)
    (tmp_path / "marks").mkdir()
    monkeypatch.setenv("MARK_DIR", str(tmp_path / "marks"))
    text = PIPE.replace("METHOD", "zygote").replace("tests.steps:AddOne", "atexit_steps:MarkAtExit")
    graph = load(tmp_path, text.replace("{name: add,", "{name: add, fuse: false,"))
    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run")))
    assert summary.exit_code == EXIT_OK
    marks = list((tmp_path / "marks").iterdir())   # one per worker of `add`, each its own pid
    assert len(marks) == 2 and all(m.read_text() == "exited" for m in marks)
