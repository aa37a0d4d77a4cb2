"""The monitor and control sockets of a real running pipeline (router + worker processes)."""

from __future__ import annotations

import threading

import numpy as np

from flow.engine.run import RunOptions, run
from flow.observe.control import ControlClient, read_token
from flow.observe.monitor import MonitorClient
from tests.test_engine_e2e import load

PIPE = """
name: live
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 100000}, to: [slow]}
  - {name: slow, use: "tests.steps:Sleep", with: {ms: 2}, workers: {min: 1, max: 1}, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {dead_letter: OUT/dl.jsonl, stats_interval_s: 0.3}
"""


def run_in_background(tmp_path, script, pipe: str = PIPE):
    """Run `pipe`; once the router is bound, run ``script(router, publisher)`` in a thread."""
    graph = load(tmp_path, pipe)
    out = {}

    def on_start(router, publisher):
        def body():
            try:
                out["result"] = script(router, publisher)
            except BaseException as exc:  # surfaced by the test below
                out["error"] = exc
            finally:
                router.signal_count = 2  # abort: the test is over
        threading.Thread(target=body, daemon=True).start()

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"), scale=False,
                                    on_start=on_start))
    if "error" in out:
        raise out["error"]
    return out["result"], summary


def test_late_subscriber_gets_graph_context_and_counts(tmp_path):
    def script(router, publisher):
        with MonitorClient(publisher.monitor_endpoint) as mon:
            mon.start()
            snap = mon.wait_for(lambda s: s.stats is not None and s.graph is not None
                                and s.stats["steps"]["write"]["done"] >= 200, timeout=30)
            return snap

    snap, summary = run_in_background(tmp_path, script)
    assert [s["name"] for s in snap.graph["steps"]] == ["read", "slow", "write"]
    assert snap.graph["steps"][0]["to"] == ["slow"]
    assert snap.context == {"counter": {"n": 100000, "start": 0}}
    st = snap.stats["steps"]
    assert st["write"]["done"] >= 200 and st["slow"]["workers"] == 1
    assert snap.stats["total"] == 100000 and 0 < snap.stats["progress"] < 1
    assert summary.state == "aborted"


def test_control_scale_pause_and_bad_token(tmp_path):
    def script(router, publisher):
        token = read_token(str(publisher.token_file))
        with MonitorClient(publisher.monitor_endpoint) as mon, \
                ControlClient(publisher.control_endpoint, token) as ctl:
            mon.start()
            mon.wait_for(lambda s: s.stats is not None, timeout=30)
            bad = ControlClient(publisher.control_endpoint, "wrong").send("pause")
            reply = ctl.send("scale", step="slow", min=2, max=3)
            scaled = mon.wait_for(lambda s: s.stats["steps"]["slow"]["workers_max"] == 3
                                  and s.stats["steps"]["slow"]["workers"] == 2, timeout=30)
            unknown = ctl.send("scale", step="nope", max=2)
            paused = ctl.send("pause")
            seen_paused = mon.wait_for(lambda s: s.stats["state"] == "paused", timeout=10)
            produced = seen_paused.stats["produced"]
            resumed = ctl.send("resume")
            later = mon.wait_for(lambda s: s.stats["state"] == "running"
                                 and s.stats["produced"] > produced, timeout=10)
            return bad, reply, scaled, unknown, paused, resumed, later

    (bad, reply, scaled, unknown, paused, resumed, later), _ = run_in_background(tmp_path, script)
    assert bad == {"ok": False, "error": "bad token"}
    assert reply["ok"] and paused["ok"] and resumed["ok"]
    assert scaled.stats["steps"]["slow"]["workers_min"] == 2
    assert not unknown["ok"] and "nope" in unknown["error"]
    assert later.stats["produced"] > 0


BIG = """
name: live-big
steps:
  - {name: read, use: "tests.engine_steps:Filled", with: {n: 100000, nbytes: 2097152}, to: [slow]}
  - {name: slow, use: "tests.steps:Sleep", with: {ms: 20}, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {dead_letter: OUT/dl.jsonl, stats_interval_s: 0.3, shm_threshold: 65536}
"""


def test_tap_samples_events_whose_arrays_are_in_shared_memory(tmp_path):
    """A sampled event carries the bytes of its shared-memory segments: the monitor decodes the
    whole event, not just its small fields."""
    def script(router, publisher):
        assert router.shm_store is not None
        token = read_token(str(publisher.token_file))
        with MonitorClient(publisher.monitor_endpoint) as mon, \
                ControlClient(publisher.control_endpoint, token) as ctl:
            mon.start()
            mon.wait_for(lambda s: s.stats is not None, timeout=30)
            assert ctl.send("tap", edge="read->slow")["ok"]
            return mon.wait_for(lambda s: s.sample is not None, timeout=30).sample

    (header, event), _ = run_in_background(tmp_path, script, BIG)
    assert header["edge"] == "read->slow" and header["shm"]
    data = event["data"]
    assert data.dtype == np.float32 and data.size == 2097152 // 4
    assert np.all(data == event["i"])
