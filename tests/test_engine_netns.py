"""Two hosts for real: a router and an agent in two network namespaces joined by a veth pair.

Needs root and iproute2 (``ip netns``); it runs in CI, which is root. Each test makes its own pair of
namespaces (unique names, 10.231.0.1/24 in A and 10.231.0.2/24 in B, private to those namespaces)
and deletes them afterwards, with every process started in them.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import psutil
import pytest

from tests.steps import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IP = shutil.which("ip")

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                       reason="network namespaces need root (CI runs this as root)"),
    pytest.mark.skipif(IP is None, reason="iproute2 `ip` is not installed"),
]

ADDR_A, ADDR_B = "10.231.0.1", "10.231.0.2"
PORT = 5555
ENDPOINT = f"tcp://{ADDR_A}:{PORT}"

GRAPH = """
name: netns
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: N}, to: [where]}
  - {name: where, use: "tests.test_engine_agent:WhereAmI", with: {ms: MS}, workers: 2, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {dead_letter: OUT/dl.jsonl, heartbeat_s: 0.2, max_retries: 20, start_method: spawn}  # local workers are the router's own children (the ppid checks below)
"""


def ip(*args: str) -> None:
    subprocess.run([IP, *args], check=True, capture_output=True, timeout=20)


@dataclass
class Pair:
    a: str
    b: str
    veth_a: str
    veth_b: str
    procs: list

    def popen(self, ns: str, cmd: list[str], log_path, **env) -> subprocess.Popen:
        envs = [f"{k}={v}" for k, v in env.items()]
        proc = subprocess.Popen([IP, "netns", "exec", ns, "env", *envs, *cmd], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=open(log_path, "w"),
                                stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


@pytest.fixture
def pair():
    tag = uuid.uuid4().hex[:8]
    p = Pair(f"flwA{tag}", f"flwB{tag}", f"fva{tag}", f"fvb{tag}", [])
    made = []
    try:
        for ns in (p.a, p.b):
            ip("netns", "add", ns)
            made.append(ns)
        # created directly inside the namespaces: nothing touches the host's own network
        ip("link", "add", p.veth_a, "netns", p.a, "type", "veth", "peer", "name", p.veth_b,
           "netns", p.b)
        for ns, dev, addr in ((p.a, p.veth_a, ADDR_A), (p.b, p.veth_b, ADDR_B)):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield p
    finally:
        for proc in p.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for ns in made:   # whatever still runs in our namespaces was started by this test
            out = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True)
            for pid in out.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in made:
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=20)


@pytest.fixture
def keys(tmp_path):
    from flow.wire.security import generate_keys
    d = tmp_path / "keys"
    generate_keys(d)
    return str(d)


def write_graph(tmp_path, n: int, ms: float) -> str:
    text = GRAPH.replace("N}", f"{n}}}").replace("MS}", f"{ms}}}").replace("OUT", str(tmp_path))
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return str(path)


def start_router(pair: Pair, tmp_path, graph: str, keys: str, wait_s: float) -> subprocess.Popen:
    return pair.popen(pair.a, [sys.executable, "-m", "flow.cli", "run", graph, "--bind", ENDPOINT,
                               "--keys", keys, "--quiet", "--no-scale",
                               "--summary-json", str(tmp_path / "summary.json")],
                      tmp_path / "router.log", FLOW_AGENT_WAIT_S=wait_s)


def start_agent(pair: Pair, tmp_path, keys: str, name: str = "b") -> subprocess.Popen:
    return pair.popen(pair.b, [sys.executable, "-m", "flow.cli", "agent", "--connect", ENDPOINT,
                               "--cpus", "2", "--keys", keys, "--name", name],
                      tmp_path / f"agent-{name}.log")


def finish(proc: subprocess.Popen, tmp_path, timeout: float = 50) -> dict:
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"router did not finish:\n{(tmp_path / 'router.log').read_text()[-3000:]}")
    log = (tmp_path / "router.log").read_text()
    assert rc == 0, log[-3000:]
    return json.loads((tmp_path / "summary.json").read_text())


def rows(tmp_path) -> list[dict]:
    return read_jsonl(str(tmp_path / "out.jsonl"))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_stager_runs_on_agent_in_another_namespace(pair, tmp_path, keys):
    n = 500
    router = start_router(pair, tmp_path, write_graph(tmp_path, n, 0.0), keys, 30)
    agent = start_agent(pair, tmp_path, keys)
    summary = finish(router, tmp_path)
    got = rows(tmp_path)
    assert collections.Counter(r["key"] for r in got) == {str(i): 1 for i in range(n)}
    assert summary["produced"] == n
    assert {r["event"]["ppid"] for r in got} == {agent.pid}    # the agent's workers, in B
    stop(agent)


def test_link_down_mid_run_requeues_and_completes_locally(pair, tmp_path, keys):
    n = 2000
    router = start_router(pair, tmp_path, write_graph(tmp_path, n, 3.0), keys, 30)
    agent = start_agent(pair, tmp_path, keys)
    deadline = time.monotonic() + 40
    while len(rows(tmp_path)) < 200:
        assert time.monotonic() < deadline and router.poll() is None, "no progress"
        time.sleep(0.05)
    ip("-n", pair.b, "link", "set", pair.veth_b, "down")
    at = len(rows(tmp_path))
    summary = finish(router, tmp_path)
    got = rows(tmp_path)
    assert at < n, "the link went down too late"
    assert collections.Counter(r["key"] for r in got) == {str(i): 1 for i in range(n)}
    ppids = collections.Counter(r["event"]["ppid"] for r in got)
    assert ppids[agent.pid] >= 200 and ppids[router.pid] > 0, ppids    # B, then A's own workers
    assert set(ppids) == {agent.pid, router.pid}
    log = (tmp_path / "router.log").read_text()
    assert "dropped" in log and "requeuing" in log, log[-3000:]
    assert summary["produced"] == n
    # cut off from its router, the agent kills its workers (no orphans) and keeps running
    deadline = time.monotonic() + 10
    while psutil.Process(agent.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert psutil.Process(agent.pid).children() == [] and agent.poll() is None
    stop(agent)


def test_agent_with_wrong_key_is_refused(pair, tmp_path, keys):
    from flow.wire.security import generate_keys, key_paths
    bad = tmp_path / "bad"
    generate_keys(bad)
    shutil.copyfile(key_paths(keys).server_public, key_paths(bad).server_public)
    n = 300
    router = start_router(pair, tmp_path, write_graph(tmp_path, n, 0.0), keys, 3)
    agent = start_agent(pair, tmp_path, str(bad), "intruder")
    summary = finish(router, tmp_path)
    got = rows(tmp_path)
    assert collections.Counter(r["key"] for r in got) == {str(i): 1 for i in range(n)}
    assert {r["event"]["ppid"] for r in got} == {router.pid}       # all local
    assert summary["produced"] == n
    assert "refused CURVE client" in (tmp_path / "router.log").read_text()
    assert psutil.Process(agent.pid).children() == []
    stop(agent)


def test_non_loopback_bind_needs_keys(pair, tmp_path):
    proc = pair.popen(pair.a, [sys.executable, "-m", "flow.cli", "run",
                               write_graph(tmp_path, 10, 0.0), "--bind", ENDPOINT, "--quiet"],
                      tmp_path / "router.log")
    assert proc.wait(30) == 2                                       # EXIT_CONFIG
    assert "refusing to bind" in (tmp_path / "router.log").read_text()
