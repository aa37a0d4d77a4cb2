"""flow.observe.monitor against the fake router (tests/fake_pipeline.py) on real tcp sockets."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from flow.observe.control import ControlClient
from flow.observe.monitor import MonitorClient, decode_payload, fallback_encode, topo_layers
from tests.fake_pipeline import DEFAULT_STEPS, FakePipeline


@pytest.fixture
def fake():
    with FakePipeline(interval=None) as f:
        yield f


def test_late_joiner_gets_graph_context_and_latest_stats(fake):
    last = fake.publish(4)  # published before anyone listens
    with MonitorClient(fake.pub_addr) as mon:
        snap = mon.wait_for(lambda s: s.graph and s.context and s.stats)
    assert snap.run_id == fake.run_id
    assert [s["name"] for s in snap.graph["steps"]] == [s["name"] for s in DEFAULT_STEPS]
    assert snap.stats["steps"]["clean"]["in"] == last["steps"]["clean"]["in"] == 4 * 100 - 10
    cam = snap.context["subarray"]["tels"][1]["camera"]
    np.testing.assert_array_equal(cam["pix_x"], fake.context["subarray"]["tels"][1]["camera"]["pix_x"])


def test_stats_logs_decisions_and_dead_letters(fake):
    with MonitorClient(fake.pub_addr) as mon:
        mon.wait_for(lambda s: s.graph is not None)
        fake.publish(5)
        snap = mon.wait_for(lambda s: s.stats and s.stats["produced"] == 500)
        ev = mon.take_events()
    assert snap.alive
    assert [(d["step"], d["old"], d["new"]) for d in ev.decisions] == [("calibrate", 1, 2)]
    assert [d["key"] for d in ev.dead_letters] == ["1:42"]
    assert any("scaler" in log["message"] for log in ev.logs)
    assert len(snap.history) == 5 and snap.history[-1][1]["read"][0] == 100.0
    assert mon.take_events().decisions == []  # taken once


def test_drops_old_records_when_behind(fake):
    mon = MonitorClient(fake.pub_addr, max_drain=10_000)  # polled by hand: nobody reads meanwhile
    try:
        mon.wait_for(lambda s: s.graph is not None)
        fake.publish(300)
        fake.call(lambda: [fake.publish_sample() for _ in range(20)])
        time.sleep(0.3)
        deadline = time.monotonic() + 10
        while True:   # a drain reads all that is queued; a slow machine may need two or three
            mon.poll(100)
            snap = mon.snapshot()
            done = snap.stats is not None and snap.stats["produced"] == 300 * 100 \
                and snap.sample is not None and snap.sample[1]["event_id"] == 300
            if done or time.monotonic() > deadline:
                break
    finally:
        mon.stop()
    assert snap.stats["produced"] == 300 * 100
    assert snap.sample[1]["event_id"] == 300 and snap.sample[0]["edge"] == "clean->hillas"
    # only the newest sample of each drain is decoded: 19 dropped in one drain (the usual case)
    assert 15 <= snap.dropped <= 19
    # the 300 published records, plus the latest-stats replay of the subscription when the fake
    # had already published one before the client subscribed (a race the test does not control)
    assert len(snap.history) in (300, 301)


def test_reconnects_to_a_new_run_on_the_same_address():
    first = FakePipeline(interval=0.1).start()
    addr = first.pub_addr
    with MonitorClient(addr, stale_s=1.0) as mon:
        mon.wait_for(lambda s: s.run_id == first.run_id and s.stats is not None)
        first.close()
        mon.wait_for(lambda s: not s.alive, timeout=5)
        with FakePipeline(pub_addr=addr, interval=0.1, run_id="second-run") as second:
            snap = mon.wait_for(lambda s: s.run_id == "second-run" and s.graph and s.stats, timeout=10)
            assert snap.alive and snap.stats["run_id"] == "second-run"
            assert all(t >= second._start_t for t, _ in snap.history)  # old run's history is gone
            assert mon.take_events().run_changed


def test_malformed_records_are_counted_not_raised(fake):
    with MonitorClient(fake.pub_addr) as mon:
        mon.wait_for(lambda s: s.graph is not None)
        fake.call(fake.pub.send_multipart, [b"stats", b"\xc1garbage"])
        fake.call(fake.pub.send_multipart, [b"stats", msgpack.packb({"v": 99, "type": "stats"})])
        fake.publish(1)
        snap = mon.wait_for(lambda s: s.stats is not None and s.malformed == 2)
    assert snap.stats["v"] == 1


def test_control_scale_is_applied_and_shown(fake):
    with MonitorClient(fake.pub_addr) as mon, ControlClient(fake.ctl_addr, fake.token) as ctl:
        assert ctl.send("scale", step="clean", min=2, max=6) == {"ok": True, "error": None}
        fake.publish(1)
        snap = mon.wait_for(lambda s: s.stats and s.stats["steps"]["clean"]["workers_max"] == 6)
        assert snap.stats["steps"]["clean"]["workers"] == 2
        assert ctl.send("pause")["ok"]
        fake.publish(1)
        mon.wait_for(lambda s: s.stats["state"] == "paused")
        assert fake.commands[0] == {"v": 1, "cmd": "scale", "token": "s3cret", "step": "clean",
                                    "min": 2, "max": 6}


def test_control_errors_are_replies(fake):
    with ControlClient(fake.ctl_addr, "wrong") as bad:
        assert bad.send("pause") == {"ok": False, "error": "bad token"}
    with ControlClient(fake.ctl_addr, fake.token) as ctl:
        assert not ctl.send("scale", step="nope", max=3)["ok"]
        assert not ctl.send("scale", step="clean", min=5, max=2)["ok"]
        assert not ctl.send("tap", edge="read->write")["ok"]
        assert ctl.send("tap", edge="read->calibrate")["ok"]
        assert not ctl.send("explode")["ok"]


def test_control_timeout_then_recovers():
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        ctl = ControlClient(f"tcp://127.0.0.1:{port}", "t", timeout_s=0.3)
        t0 = time.monotonic()
        reply = ctl.send("pause")
        assert not reply["ok"] and "no reply" in reply["error"]
        assert time.monotonic() - t0 < 2
        # the late reply to the first request must not be taken as the answer to the second
        ident, *_ = silent.recv_multipart()
        silent.send_multipart([ident, b"", msgpack.packb({"ok": True, "error": "stale"})])
        reply = ctl.send("resume")
        assert "stale" not in str(reply.get("error"))
        ctl.close()
    finally:
        silent.close(linger=0)


def test_fallback_payload_roundtrip():
    value = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), 3: {"b": [1.5, "x"]}}
    back = decode_payload(fallback_encode(value))
    np.testing.assert_array_equal(back["a"], value["a"])
    assert back[3] == {"b": [1.5, "x"]}


def test_topo_layers_longest_path():
    steps = [{"name": "a", "to": ["b", "d"]}, {"name": "b", "to": ["c"]}, {"name": "c", "to": ["d"]},
             {"name": "d", "to": []}, {"name": "e", "to": ["d"]}]
    assert topo_layers(steps) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 0}
