"""`flow agent` and agent placement in the launcher: real agents, workers and sockets on loopback.

`WhereAmI` (a stager defined here, ``use: tests.test_engine_agent:WhereAmI``) stamps each event with the pid
and parent pid of the worker that processed it, so a test can tell which agent (or the router's own
host) ran it.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import msgpack
import psutil
import pytest
import zmq

from flow.engine.launcher import AgentLauncher, Handle, LocalLauncher, PlacedHandle
from flow.engine.run import RunOptions, run
from flow.graph.model import RouterOptions, StepSpec
from flow.graph.params import Param
from flow.graph.step import Stager
from flow.observe.summary import EXIT_OK
from flow.wire import protocol as P
from tests.steps import read_jsonl
from tests.test_engine_e2e import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WhereAmI(Stager):
    """Adds {"pid", "ppid"} of this worker to the event; sleeps `ms` first."""

    ms = Param(float, 0.0, "milliseconds per event")

    def process(self, event: dict) -> dict:
        if self.ms:
            time.sleep(self.ms / 1000.0)
        return {**event, "pid": os.getpid(), "ppid": os.getppid()}


GRAPH = """
name: agents
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: N}, to: [where]}
  - {name: where, use: "tests.test_engine_agent:WhereAmI", with: {ms: MS}, workers: W, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {dead_letter: OUT/dl.jsonl, heartbeat_s: 0.2, max_retries: 20}
"""


def graph_text(n: int, ms: float = 0.0, workers: int = 1) -> str:
    return GRAPH.replace("N}", f"{n}}}").replace("MS}", f"{ms}}}").replace("W,", f"{workers},")


def start_agent(endpoint: str, cpus: int, name: str, keys: str | None = None,
                *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flow.cli", "agent", "--connect", endpoint, "--cpus", str(cpus),
           "--name", name, *extra]
    if keys:
        cmd += ["--keys", keys]
    return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)


def stop_agent(proc: subprocess.Popen) -> None:
    """SIGTERM the agent; it must exit and leave no worker behind."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the agent did not exit on SIGTERM")
    gone, alive = psutil.wait_procs(children, timeout=5)
    for p in alive:
        p.kill()
    assert not alive, f"agent left workers behind: {alive}"


def key_counts(path) -> collections.Counter:
    return collections.Counter(r["key"] for r in read_jsonl(str(path)))


@pytest.fixture
def agents():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            stop_agent(p)


# -- end to end ------------------------------------------------------------------------------

def test_stager_runs_on_agent(tmp_path, monkeypatch, agents):
    monkeypatch.setenv("FLOW_AGENT_WAIT_S", "30")
    graph = load(tmp_path, graph_text(400, workers=2))
    seen = {}

    def on_start(router, publisher):
        seen["router"] = router
        agents.append(start_agent(router.endpoint, 2, "a1"))

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"),
                                    bind="tcp://127.0.0.1:0", scale=False, on_start=on_start))
    assert summary.exit_code == EXIT_OK, summary.failures
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    assert key_counts(tmp_path / "out.jsonl") == {str(i): 1 for i in range(400)}
    assert {r["event"]["ppid"] for r in rows} == {agents[0].pid}   # every event ran under the agent
    launcher = seen["router"].launcher
    assert launcher.started_remote == 2 and launcher.started == 2   # producer and consumer local
    stop_agent(agents[0])


@pytest.mark.parametrize("fallback", ["local", "agent"])
def test_killed_agent_its_work_completes_elsewhere(tmp_path, monkeypatch, agents, fallback):
    monkeypatch.setenv("FLOW_AGENT_WAIT_S", "30")
    n = 1500
    # ~4 s of work after the kill point: time for a second agent to start on a slow machine
    graph = load(tmp_path, graph_text(n, ms=6.0, workers=2))
    out = tmp_path / "out.jsonl"
    killed = {}

    def killer(router):
        deadline = time.monotonic() + 60
        while len(read_jsonl(str(out))) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        if fallback == "agent":
            agents.append(start_agent(router.endpoint, 2, "a2"))
            while len(router.launcher.agents) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        victim = psutil.Process(agents[0].pid)
        workers = victim.children(recursive=True)
        killed["workers"] = [p.pid for p in workers]
        for p in [victim, *workers]:
            p.kill()
        killed["at"] = len(read_jsonl(str(out)))

    def on_start(router, publisher):
        killed["zygote"] = router.launcher.zygote.proc.pid if router.launcher.zygote else None
        agents.append(start_agent(router.endpoint, 2, "a1"))
        threading.Thread(target=killer, args=(router,), daemon=True).start()

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"),
                                    bind="tcp://127.0.0.1:0", scale=False, on_start=on_start))
    assert summary.exit_code == EXIT_OK, summary.failures
    assert killed["workers"] and killed["at"] < n, "the agent was not killed mid-run"
    assert key_counts(out) == {str(i): 1 for i in range(n)}       # every key exactly once
    ppids = collections.Counter(r["event"]["ppid"] for r in read_jsonl(str(out)))
    assert ppids[agents[0].pid] >= 200
    # a local takeover runs under this process's worker template (or this process: spawn)
    takeover = {os.getpid(), killed["zygote"]} if fallback == "local" else {agents[1].pid}
    assert sum(ppids[p] for p in takeover) > 0, ppids
    assert set(ppids) <= {agents[0].pid, *takeover}
    for pid in killed["workers"]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_agent_with_wrong_keys_is_refused(tmp_path, monkeypatch, agents):
    from flow.wire.security import generate_keys, key_paths
    keys, bad = tmp_path / "keys", tmp_path / "bad"
    generate_keys(keys)
    generate_keys(bad)                        # its own client key, not in keys/authorized/...
    shutil.copyfile(key_paths(keys).server_public, key_paths(bad).server_public)  # ...right server
    monkeypatch.setenv("FLOW_AGENT_WAIT_S", "2")
    graph = load(tmp_path, graph_text(200, workers=1))
    seen = {}

    def on_start(router, publisher):
        seen["router"] = router
        seen["zygote"] = router.launcher.zygote.proc.pid if router.launcher.zygote else None
        agents.append(start_agent(router.endpoint, 2, "intruder", str(bad)))
        # local workers start in milliseconds now: let the intruder knock (and be refused,
        # by the authenticator's own thread) before the short run is over
        deadline = time.monotonic() + 60
        while router.security.refused_count < 1 and time.monotonic() < deadline:
            time.sleep(0.05)

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"),
                                    bind="tcp://127.0.0.1:0", keys_dir=str(keys), scale=False,
                                    on_start=on_start))
    router = seen["router"]
    assert summary.exit_code == EXIT_OK, summary.failures
    assert router.security.refused_count >= 1
    assert not router.agents and router.launcher.started_remote == 0
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    assert key_counts(tmp_path / "out.jsonl") == {str(i): 1 for i in range(200)}
    # local workers did it: children of this process, or of its worker template
    assert {r["event"]["ppid"] for r in rows} <= {os.getpid(), seen["zygote"]}
    assert psutil.Process(agents[0].pid).children() == []


def test_agent_with_keys_runs_workers_with_keys(tmp_path, monkeypatch, agents):
    from flow.wire.security import generate_keys
    keys = tmp_path / "keys"
    generate_keys(keys)
    monkeypatch.setenv("FLOW_AGENT_WAIT_S", "30")
    graph = load(tmp_path, graph_text(200, workers=1))

    def on_start(router, publisher):
        agents.append(start_agent(router.endpoint, 1, "a1", str(keys)))

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"),
                                    bind="tcp://127.0.0.1:0", keys_dir=str(keys), scale=False,
                                    on_start=on_start))
    assert summary.exit_code == EXIT_OK, summary.failures
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    assert len(rows) == 200 and {r["event"]["ppid"] for r in rows} == {agents[0].pid}


# -- the agent against a scripted router -----------------------------------------------------

class FakeRouter:
    """A bare ROUTER socket playing the router's side of the agent protocol."""

    def __init__(self):
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.hellos: dict[str, int] = {}

    def recv(self, timeout: float = 5.0):
        """Next AGENT message as (ident, envelope); HELLOs of workers are recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sock.poll(50):
                continue
            ident, *frames = self.sock.recv_multipart()
            msg = P.Message.from_frames(frames)
            if msg.command == P.HELLO:
                self.hellos[msg.envelope["worker"]] = msg.envelope["pid"]
            elif msg.command == P.AGENT:
                return ident, msg.envelope
        raise AssertionError("no AGENT message")

    def wait(self, pred, timeout: float = 10.0, reply: bool = True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ident, env = self.recv(timeout)
            if reply:
                self.send(ident, P.HEARTBEAT, {"heartbeat_s": 0.2, "liveness": 3})
            if pred(ident, env):
                return ident, env
        raise AssertionError("condition not met")

    def send(self, ident, command, env):
        self.sock.send_multipart([ident, P.VERSION, command, msgpack.packb(env)])

    def close(self):
        self.sock.close(0)


def _gone(pid: int, timeout: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_agent_spawns_kills_reconnects_and_leaves_no_orphans(tmp_path):
    fake = FakeRouter()
    agent = start_agent(fake.endpoint, 2, "solo", None, "--orphan-timeout", "2")
    try:
        ident, env = fake.wait(lambda i, e: True)
        assert env["cpus"] == 2 and env["name"] == "solo" and env["workers"] == []
        assert env["pid"] == agent.pid
        agent_id = env["agent_id"]
        fake.send(ident, P.SPAWN, {"worker": "w.1", "step": "x"})
        fake.wait(lambda i, e: e["workers"] == ["w.1"] and "w.1" in fake.hellos)
        pid1 = fake.hellos["w.1"]
        assert psutil.Process(pid1).ppid() == agent.pid
        fake.send(ident, P.KILL, {"worker": "w.1"})
        _, env = fake.wait(lambda i, e: e["workers"] == [] and e["exited"])
        assert env["exited"][0][0] == "w.1" and _gone(pid1, 2)
        # over capacity: refused and reported as exited
        for w in ("w.2", "w.3", "w.4"):
            fake.send(ident, P.SPAWN, {"worker": w, "step": "x"})
        _, env = fake.wait(lambda i, e: ["w.4", -1] in e["exited"])
        fake.wait(lambda i, e: "w.2" in fake.hellos and "w.3" in fake.hellos)
        pid2 = fake.hellos["w.2"]
        # the router goes silent: the agent reconnects (a new socket: a new identity)...
        t0 = time.monotonic()
        new_ident, env = fake.wait(lambda i, e: i != ident, reply=False)
        assert env["agent_id"] == agent_id and time.monotonic() - t0 < 3
        # ... and kills its workers once the silence exceeds the orphan timeout
        assert _gone(pid2, 5), "worker outlived the orphan timeout"
        _, env = fake.wait(lambda i, e: e["workers"] == [], reply=False)
        # back-off between reconnections grows (0.5, 1, 2, 4, 5 s...)
        idents, times, gaps = [], [], []
        t_end = time.monotonic() + 20   # until the back-off has grown (a slow machine starts late)
        while time.monotonic() < t_end and not (len(gaps) >= 2 and max(gaps) >= 3.0):
            i, _ = fake.recv(6)
            if not idents or i != idents[-1]:
                idents.append(i)
                times.append(time.monotonic())
                gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert len(gaps) >= 2 and max(gaps) >= 3.0 and max(gaps) <= 5.0 + 1.0, gaps
        # the router answers again: the agent works as before; kill -9 of the agent kills workers
        ident, _ = fake.wait(lambda i, e: True)
        fake.send(ident, P.SPAWN, {"worker": "w.5", "step": "x"})
        fake.wait(lambda i, e: e["workers"] == ["w.5"] and "w.5" in fake.hellos)
        agent.kill()
        agent.wait(5)
        assert _gone(fake.hellos["w.5"], 5), "worker outlived its agent"
    finally:
        if agent.poll() is None:
            stop_agent(agent)
        fake.close()


def test_agent_exits_on_sigterm_and_kills_workers():
    fake = FakeRouter()
    agent = start_agent(fake.endpoint, 1, "t")
    try:
        ident, _ = fake.wait(lambda i, e: True)
        fake.send(ident, P.SPAWN, {"worker": "w.1", "step": "x"})
        fake.wait(lambda i, e: "w.1" in fake.hellos)
        pid = fake.hellos["w.1"]
        t0 = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
        assert time.monotonic() - t0 < 3.0, "promptly: a Slurm step must end before its grace"
        assert _gone(pid, 3)
    finally:
        if agent.poll() is None:
            agent.kill()
        fake.close()


# -- the launcher's placement, with a stand-in router ----------------------------------------

class StubGraph:
    def __init__(self):
        self.steps = [StepSpec("read", "producer", "x:y", to=("work",)),
                      StepSpec("work", "stager", "x:y", to=("pin",)),
                      StepSpec("pin", "stager", "x:y", to=("write",), pinned=True),
                      StepSpec("write", "consumer", "x:y")]


class StubRouter:
    def __init__(self):
        self.graph = StubGraph()
        self.opts = RouterOptions(heartbeat_s=0.1, liveness=3)
        self.agents: set = set()
        self.sent: list = []

    def _send_ident(self, ident, command, envelope=None, frames=None):
        self.sent.append((ident, command, envelope or {}))

    def agent_msg(self, launcher, ident, **env):
        self.agents.add(ident)
        base = {"host": "h", "cpus": 2, "name": "n", "agent_id": "A", "workers": [], "exited": []}
        launcher.on_agent_message(self, ident, P.Message(P.AGENT, {**base, **env}))


@pytest.fixture
def launcher(monkeypatch):
    monkeypatch.delenv("FLOW_AGENT_WAIT_S", raising=False)
    la = LocalLauncher("tcp://127.0.0.1:1")
    monkeypatch.setattr(la, "_start_process", lambda wid, step: Handle(wid, step, None))
    return la


def test_launcher_places_unpinned_stagers_on_agents(launcher):
    assert AgentLauncher is LocalLauncher
    r = StubRouter()
    h0 = launcher.start("work")                  # no agent yet: local, a plain Handle
    assert type(h0) is Handle
    r.agent_msg(launcher, b"a1")
    assert r.sent[-1][1] == P.HEARTBEAT and r.sent[-1][2]["heartbeat_s"] == 0.1
    assert launcher.remote_cpus() == 2
    for step in ("read", "pin", "write"):
        assert type(launcher.start(step)) is Handle, step       # pinned by nature or by choice
    h1, h2, h3 = (launcher.start("work") for _ in range(3))
    assert (h1.state, h2.state, type(h3)) == ("remote", "remote", Handle)   # 2 cpus
    assert isinstance(h1, PlacedHandle) and h1.process is None and h1.agent == b"a1"
    spawns = [(i, e) for i, c, e in r.sent if c == P.SPAWN]
    assert spawns == [(b"a1", {"worker": h1.worker_id, "step": "work"}),
                      (b"a1", {"worker": h2.worker_id, "step": "work"})]
    # the agent lists h1; h2 exits there; a stray worker is told to die
    r.agent_msg(launcher, b"a1", workers=[h1.worker_id, "stray.1"], exited=[[h2.worker_id, 1]])
    assert h1.alive() and not h2.alive() and h2.exit_code == 1
    assert (b"a1", P.KILL, {"worker": "stray.1"}) in r.sent
    h1.kill()
    assert r.sent[-1] == (b"a1", P.KILL, {"worker": h1.worker_id}) and not h1.alive()
    # h1 still counts against the cpus until its exit is reported
    assert launcher.start("work").state == "remote"
    assert type(launcher.start("work")) is Handle


def test_launcher_drops_silent_agent_and_follows_reconnection(launcher):
    r = StubRouter()
    r.agent_msg(launcher, b"a1", cpus=1)
    h = launcher.start("work")
    assert h.state == "remote" and h.agent == b"a1"
    r.agent_msg(launcher, b"a2", workers=[h.worker_id], cpus=1)   # same agent, new socket
    assert h.agent == b"a2" and b"a1" not in r.agents and h.alive()
    h.kill()
    assert r.sent[-1] == (b"a2", P.KILL, {"worker": h.worker_id})
    assert type(launcher.start("work")) is Handle        # h still holds the only cpu
    r.agent_msg(launcher, b"a2", exited=[[h.worker_id, -9]], cpus=1)
    h3 = launcher.start("work")
    assert h3.state == "remote"
    time.sleep(0.35)                                     # liveness 3 x 0.1 s
    assert not h3.alive() and launcher.agents == {} and not r.agents
    assert launcher.agents_lost == 1
    assert type(launcher.start("work")) is Handle          # no agent: local again


def test_launcher_waits_for_first_agent(monkeypatch):
    la = LocalLauncher("tcp://127.0.0.1:1", agent_wait_s=0.3)
    monkeypatch.setattr(la, "_start_process", lambda wid, step: Handle(wid, step, None))
    read, work = la.start("read"), la.start("work")      # the graph is not known yet: both wait
    assert read.state == work.state == "pending" and read.alive()
    r = StubRouter()
    r.agent_msg(la, b"a1")
    assert read.state == "local" and work.state == "remote"
    # without any agent, the wait ends on time and workers start here
    la = LocalLauncher("tcp://127.0.0.1:1", graph=StubGraph(), agent_wait_s=0.2)
    monkeypatch.setattr(la, "_start_process", lambda wid, step: Handle(wid, step, None))
    assert type(la.start("read")) is Handle            # known to be a producer: never waits
    work = la.start("work")
    assert work.state == "pending"
    time.sleep(0.25)
    assert work.alive() and work.state == "local"
    killed = LocalLauncher("tcp://127.0.0.1:1", graph=StubGraph(), agent_wait_s=5).start("work")
    killed.kill()
    assert not killed.alive()


def test_launcher_rejects_malformed_agent_messages(launcher):
    from flow.errors import ProtocolError
    r = StubRouter()
    with pytest.raises(ProtocolError):
        r.agent_msg(launcher, b"a1", cpus="many")
    with pytest.raises(ProtocolError):
        launcher.on_agent_message(r, b"a1", P.Message(P.HELLO, {}))
    assert launcher.agents == {}
