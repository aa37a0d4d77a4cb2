"""Every command line the README and the ``--help`` texts show runs as written.

The commands are read from the README's bash blocks (with the ``(or ...)`` variants of their
comments) and from each subcommand's help example; `test_every_documented_command_is_run` fails
when one is added that this module does not run. Each runs through bash in a scratch directory
holding a copy of ``configs/`` (so ``out/`` lands there), with ``HOME`` in the scratch directory
(so ``~/.flow/keys`` does), Qt offscreen, and ``flow`` being this checkout's command. Placeholders
take a free local address (``ADDR``, ``ROUTER``, ``router-host``, the ports 5555 and 5560); demo
runs get ``--set read.n_events=N`` and the simtel run ``--set read.max_events=N`` to stay short, and
the GUI ``--exit-after S --screenshot PNG`` to end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import GAMMA_TEST

ROOT = Path(__file__).resolve().parent.parent
N = 40  # events of a short demo run
pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    """The ``flow ...`` lines of the README's bash blocks, continuations joined, comments off."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" # ")
            command = re.sub(r"\s+", " ", command).strip()
            if command.startswith("flow "):
                out.append(command)
            out += re.findall(r"\(or: (flow [^)]+)\)", comment)
            out += [f"{command} {opt}" for opt in re.findall(r"\(or (--[^)]+)\)", comment)]
    return out


def help_examples() -> list[str]:
    from flow.cli.app import all_commands

    return [c.example for c in all_commands()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workspace:
    """The scratch directory the commands run in, and how to run one."""

    def __init__(self, path: Path, data_dir: Path):
        self.dir, self.home, self.bin = path / "work", path / "home", path / "bin"
        for d in (self.dir, self.home, self.bin):
            d.mkdir()
        shutil.copytree(ROOT / "configs", self.dir / "configs")
        flow = self.bin / "flow"  # this checkout's `flow`, whatever else is on PATH
        flow.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flow.cli "$@"\n')
        flow.chmod(0o755)
        self.env = {**os.environ, "HOME": str(self.home), "QT_QPA_PLATFORM": "offscreen",
                    "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": str(ROOT), "FLOW_DATA_DIR": str(data_dir),
                    "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR",
                                                      str(ROOT / ".cache" / "numba"))}
        self.ran: list[str] = []

    def start(self, command: str) -> subprocess.Popen:
        """``command`` through bash in its own process group (its children end with it).

        Its output goes to a file (``proc.log``): a child that outlives it (the monitor of
        ``--gui``) would hold a pipe open.
        """
        self.ran.append(command)
        log = self.dir / f"cmd{len(self.ran)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-c", command], cwd=self.dir, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        return proc

    def run(self, command: str, timeout: float = 300, expect: int = 0) -> str:
        proc = self.start(command)
        try:
            proc.wait(timeout=timeout)
        finally:
            stop_group(proc)
        out = proc.log.read_text(errors="replace")
        assert proc.returncode == expect, f"{command}: exit {proc.returncode}\n{out[-4000:]}"
        return out


def stop_group(proc: subprocess.Popen) -> None:
    """End what is left of the process group ``proc`` leads (started by this module)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def group_commands(pgid: int) -> list[str]:
    """Command lines of the live processes in process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue
    return found


def short(command: str, n: int = N) -> str:
    if "configs/simtel_dl2.yaml" in command:
        return f"{command} --set read.max_events={n}"
    return f"{command} --set read.n_events={n}" if "configs/demo.yaml" in command else command


@pytest.fixture(scope="module")
def ws(tmp_path_factory, data_file):
    return Workspace(tmp_path_factory.mktemp("documented"), data_file(GAMMA_TEST).parent)


def summary_of(ws: Workspace, name: str) -> dict:
    return json.loads((ws.dir / name).read_text())


# ------------------------------------------------------------------ the pipeline file commands
def test_validate_graph_show_config(ws):
    assert "configs/demo.yaml: ok (10 steps)" in ws.run("flow validate configs/demo.yaml")
    mermaid = ws.run("flow graph configs/demo.yaml")
    assert "flowchart" in mermaid and "render" in mermaid
    dot = ws.run("flow graph configs/demo.yaml --format dot")
    assert dot.startswith('digraph "demo"') and '"read" -> "render"' in dot
    if shutil.which("dot"):
        ws.run("set -o pipefail; flow graph configs/demo.yaml --format dot | dot -Tsvg > demo.svg")
        assert (ws.dir / "demo.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    else:  # graphviz is not part of the install: the flow half of the pipe, as written
        ws.run("flow graph configs/demo.yaml --format dot > demo.dot")
        ws.ran.append("flow graph configs/demo.yaml --format dot | dot -Tsvg > demo.svg")
        assert (ws.dir / "demo.dot").read_text() == dot
    assert "picture_thresh" in ws.run("flow show-config configs/demo.yaml")
    shown = ws.run("flow show-config configs/demo.yaml --set clean.picture_thresh=8")
    assert re.search(r"picture_thresh: 8(\.0)?\b", shown)


# ------------------------------------------------------------------------------ runs of the demo
def shower_ids(path: Path) -> list[int]:
    import tables

    with tables.open_file(str(path)) as f:
        return sorted(int(i) for i in f.root.simulation.event.subarray.shower.read()["event_id"])


def test_run_inline_resume_shard(ws):
    out = ws.run(short("flow run configs/demo.yaml"))
    assert "finished" in out and (ws.dir / "out" / "demo_dl2.h5").stat().st_size > 10_000
    ws.run(short("flow run configs/demo.yaml --resume"))
    assert shower_ids(ws.dir / "out" / "demo_dl2.h5") == list(range(1, N + 1))  # no duplicates
    (ws.dir / "out" / "demo_dl2.h5").unlink()
    ws.run(short("flow run configs/demo.yaml --inline"))
    assert shower_ids(ws.dir / "out" / "demo_dl2.h5") == list(range(1, N + 1))
    ws.run(short("flow run configs/demo.yaml --shard 0/4", 4 * N)
           + " --summary-json out/shard.json")
    shard = summary_of(ws, "out/shard.json")
    assert 0 < shard["produced"] < 4 * N and shard["exit_code"] == 0


def test_run_with_overrides_then_report(ws):
    ws.run(short("flow run configs/demo.yaml --set clean.picture_thresh=8 --workers "
                 "calibrate=2:6 --summary-json out/summary.json --stats-jsonl out/stats.jsonl"))
    summary = summary_of(ws, "out/summary.json")
    assert summary["produced"] == N and summary["unique_consumed"]["write"] == N
    records = [json.loads(line) for line in (ws.dir / "out/stats.jsonl").read_text().splitlines()]
    assert records and records[-1]["steps"]["calibrate"]["workers_min"] == 2
    ws.run("flow report out/stats.jsonl -o out/report")
    assert len(list((ws.dir / "out" / "report").glob("*.png"))) >= 3
    ws.run(short("flow run configs/demo.yaml --workers clean=1:4 --summary-json out/summary.json"))
    assert summary_of(ws, "out/summary.json")["produced"] == N


def test_run_simtel_dl2(ws):
    ws.run(short("flow run configs/simtel_dl2.yaml", 3) + " --set write.path=out/simtel.h5")
    assert (ws.dir / "out" / "simtel.h5").stat().st_size > 10_000


def test_replay_once_the_step_is_fixed(ws):
    pipeline = ws.dir / "failing.yaml"
    text = """name: failing
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 50}, to: [check]}
  - {name: check, use: "tests.steps:FailOn", with: {fail_on: [3, 17]}, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: out/failing.jsonl}}
router: {max_retries: 1}
"""
    pipeline.write_text(text)
    ws.run("flow run failing.yaml --quiet", expect=1)       # partial: two dead letters
    assert len((ws.dir / "flow-deadletter.jsonl").read_text().splitlines()) == 2
    pipeline.write_text(text.replace("[3, 17]", "[]"))       # the step is fixed
    ws.run("flow replay flow-deadletter.jsonl")
    keys = {json.loads(line)["key"] for line in (ws.dir / "out/failing.jsonl").read_text().splitlines()}
    assert keys == {str(i) for i in range(50)}


# ----------------------------------------------------------------------------------------- GUI
def test_flow_gui_and_python_m_gui_app_take_the_same_options():
    pytest.importorskip("PyQt5")
    from flow.cli.app import build_parser
    from gui.app import build_parser as gui_parser

    def options(parser):
        return {(a.dest, tuple(a.option_strings), a.default, a.required, a.type, a.help)
                for a in parser._actions if a.dest != "help"}

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["gui"]
    assert options(sub) == options(gui_parser())
    args = sub.parse_args(["--connect", "tcp://127.0.0.1:1", "--exit-after", "2"])
    assert args.connect == "tcp://127.0.0.1:1" and args.exit_after == 2.0 and args.nice == 10


@pytest.mark.qt
def test_gui_connect_to_a_running_demo(ws):
    pytest.importorskip("PyQt5")
    port = free_port()
    run = ws.start(short(f"flow run configs/demo.yaml --monitor tcp://127.0.0.1:{port}", 400)
                   + " --set read.rate_hz=40 --quiet")
    try:
        for documented in ("flow gui --connect ADDR", "flow gui --connect tcp://127.0.0.1:5560"):
            command = documented.replace("ADDR", f"tcp://127.0.0.1:{port}").replace(
                "5560", str(port))
            shot = ws.dir / f"gui{len(ws.ran)}.png"
            ws.run(f"{command} --exit-after 4 --screenshot {shot.name}", timeout=120)
            ws.ran[-1] = documented
            assert shot.stat().st_size > 20_000
    finally:
        stop_group(run)


@pytest.mark.qt
def test_run_with_gui_opens_the_monitor(ws):
    pytest.importorskip("PyQt5")
    proc = ws.start(short("flow run configs/demo.yaml --gui", 150) + " --set read.rate_hz=30")
    try:
        seen = []
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not seen:
            seen = [c for c in group_commands(proc.pid) if "gui.app" in c and "--connect" in c]
            time.sleep(0.5)
        assert seen, "flow run --gui started no monitor"
        assert proc.wait(timeout=300) == 0, proc.log.read_text()[-3000:]
        assert [c for c in group_commands(proc.pid) if "gui.app" in c], \
            "the monitor stays open on the finished run"
    finally:
        stop_group(proc)     # closes the monitor, which outlives the run by design


# -------------------------------------------------------------------------- keys, bind, agents
@pytest.mark.parametrize("keys, router_cmd, agent_cmd", [
    ("flow keys generate keys/",
     "flow run configs/demo.yaml --bind tcp://0.0.0.0:5555 --keys keys/",
     "flow agent --connect tcp://ROUTER:5555 --cpus 16 --keys keys/"),
    ("flow keys generate ~/.flow/keys",
     "flow run configs/demo.yaml --bind tcp://0.0.0.0:5555 --keys ~/.flow/keys",
     "flow agent --connect tcp://router-host:5555 --cpus 16 --keys ~/.flow/keys"),
], ids=["readme", "help"])
def test_keys_then_an_encrypted_router_and_an_agent(ws, keys, router_cmd, agent_cmd):
    ws.run(keys)
    where = Path(keys.split()[-1].replace("~", str(ws.home)))
    where = where if where.is_absolute() else ws.dir / where
    assert {"server.key", "client.key", "client.key_secret"} <= {p.name for p in where.iterdir()}
    port = free_port()
    router = ws.start(short(router_cmd.replace("5555", str(port)), 150)
                      + " --summary-json out/bind.json")
    agent = ws.start(agent_cmd.replace("5555", str(port)).replace("ROUTER", "127.0.0.1")
                     .replace("router-host", "127.0.0.1"))
    try:
        assert router.wait(timeout=300) == 0, router.log.read_text()[-3000:]
        assert summary_of(ws, "out/bind.json")["unique_consumed"]["write"] == 150
    finally:
        stop_group(router)
        stop_group(agent)
    ws.ran[-2:] = [router_cmd, agent_cmd]
    assert "Traceback" not in agent.log.read_text()


# -------------------------------------------------------------------------------- the coverage
def test_every_documented_command_is_run(ws):
    """Last: each command the README and the help texts show was run above."""
    documented = set(readme_commands()) | set(help_examples())
    assert "flow gui --connect ADDR" in documented and len(documented) >= 20
    ran = {re.sub(r" --set read\.(n_events|max_events|rate_hz)=\d+| --quiet| --summary-json "
                  r"out/(shard|bind)\.json| --set write\.path=out/simtel\.h5| --monitor \S+", "",
                  c) for c in ws.ran}
    missing = sorted(documented - ran)
    assert not missing, f"documented but not run by this module: {missing}"
