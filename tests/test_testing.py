"""flow.testing: the helpers users test their own steps with."""

from __future__ import annotations

import numpy as np
import pytest

from flow import step as flow_step
from flow.errors import ProtocolError
from flow.graph.step import Keyed
from flow.testing import FakeClock, collect, produced, round_trip, run_stager
from tests.steps import AddOne, Counter, RouteByBranch


def test_run_stager_runs_a_class_like_a_worker():
    out = run_stager(AddOne, [{"i": 0, "value": 1}, Keyed("k", {"i": 1, "value": 5})], amount=2)
    assert out == [("0", "", {"i": 0, "value": 3}), ("k", "", {"i": 1, "value": 7})]


def test_run_stager_runs_a_function_and_sees_read_only_arrays():
    def double(event):
        assert not event["a"].flags.writeable      # as in a worker: arrays arrive read-only
        return {"a": event["a"] * 2}

    ((key, target, ev),) = run_stager(double, [{"a": np.arange(3.0)}])
    assert key == "0" and target == "" and np.array_equal(ev["a"], [0.0, 2.0, 4.0])


def test_run_stager_routes_and_reports_what_cannot_travel():
    out = run_stager(RouteByBranch, [{"i": 2}, {"i": 3}], targets=("evens", "odds"),
                     even="evens", odd="odds")
    assert [(k, t) for k, t, _ in out] == [("0", "evens"), ("1", "odds")]
    with pytest.raises(ProtocolError, match=r"event\['bad'\]"):
        run_stager(lambda e: {"bad": {1, 2}}, [{}])


def test_collect_replaces_sources_and_sinks():
    graph = (flow_step("read", Counter, n=3) | flow_step("add", AddOne, amount=10)
             | flow_step("write", "tests.steps:ListConsumer", path="unused.jsonl")).graph("t")
    got = collect(graph)
    assert [(k, ev["value"]) for k, ev in got["write"]] == [("0", 10), ("1", 11), ("2", 12)]
    assert got.summary.exit_code == 0 and got.summary.produced == 3
    mine = collect(graph, sources={"read": [Keyed("a", {"i": 0, "value": 1})]})
    assert mine["write"] == [("a", {"i": 0, "value": 11})]
    with pytest.raises(ValueError, match="not producers"):
        collect(graph, sources={"add": []})


def test_produced_and_round_trip_and_fake_clock():
    assert produced(Counter, n=2) == [("0", {"i": 0, "value": 0}), ("1", {"i": 1, "value": 1})]
    back = round_trip({"x": np.arange(3, dtype=np.int16)})
    assert back["x"].dtype == np.int16 and not back["x"].flags.writeable
    clock = FakeClock()
    clock.sleep(2.5)
    assert clock.now() == 2.5
