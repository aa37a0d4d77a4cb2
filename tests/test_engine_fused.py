"""Fused chains with real processes: the same outputs as unfused, per-step statistics, failures
dead-lettered under the failing step, kill -9 of chain workers, ``fuse: false``."""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys

from flow.engine.run import RunOptions, run
from flow.observe.summary import EXIT_OK, EXIT_PARTIAL
from tests.steps import read_jsonl
from tests.test_engine_e2e import load
from tests.test_engine_faults import kill_random_worker, run_watching

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a chain of five stagers: add, one-to-many, drop, explicit routing to the next step, and a
# last step that routes explicitly to one of two consumers (outside the chain)
SHAPES = """
name: shapes
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 300}, to: [add]}
  - {name: add, use: "tests.steps:AddOne", workers: WORKERS, to: [split]}
  - {name: split, use: "tests.steps:Split", with: {parts: 3}, to: [drop]}
  - {name: drop, use: "tests.steps:DropOdd", to: [next]}
  - {name: next, use: "tests.steps:RouteByBranch", with: {even: add2, odd: add2}, to: [add2]}
  - {name: add2, use: "tests.steps:RouteByBranch", with: {even: evens, odd: odds}, to: [evens, odds]}
  - {name: evens, use: "tests.steps:ListConsumer", with: {path: OUT/even.jsonl}}
  - {name: odds, use: "tests.steps:ListConsumer", with: {path: OUT/odd.jsonl}}
router: {dead_letter: OUT/dl.jsonl, fuse: FUSE}
"""


def rows(path) -> dict:
    return {(r["key"], json.dumps(r["event"], sort_keys=True)) for r in read_jsonl(str(path))}


def shapes(tmp_path, fuse: bool, inline: bool = False, workers: int = 1):
    d = tmp_path / f"{'fused' if fuse else 'unfused'}{'-inline' if inline else ''}"
    d.mkdir()
    graph = load(d, SHAPES.replace("FUSE", str(fuse).lower()).replace("WORKERS", str(workers)))
    summary = run(graph, RunOptions(quiet=True, inline=inline, run_dir=str(d / "run"),
                                    stats_jsonl=str(d / "stats.jsonl")))
    return d, summary


def last_stats(d) -> dict:
    return json.loads((d / "stats.jsonl").read_text().splitlines()[-1])["steps"]


def test_fused_drop_one_to_many_and_routing_give_what_unfused_and_inline_give(tmp_path):
    fused, s1 = shapes(tmp_path, True, workers=2)
    unfused, s2 = shapes(tmp_path, False)
    inline, _ = shapes(tmp_path, True, inline=True)
    assert s1.exit_code == s2.exit_code == EXIT_OK
    for name in ("even.jsonl", "odd.jsonl"):
        assert rows(fused / name) == rows(unfused / name) == rows(inline / name)
    # odd i dropped, each even i in 3 parts keyed i/0..i/2, routed to both consumers by i
    assert {k for k, _ in rows(fused / "even.jsonl")} == \
        {f"{i}/{k}" for i in range(0, 300, 2) for k in range(3)}
    assert not rows(fused / "odd.jsonl")
    assert s1.consumed == s2.consumed == {"evens": 450, "odds": 0}
    # five stagers ran in one group of 2 workers; every step has its own statistics
    stats = last_stats(fused)
    assert {n: s["group"] for n, s in stats.items()} == {
        "read": None, "add": "add", "split": "add", "drop": "add", "next": "add", "add2": "add",
        "evens": None, "odds": None}
    assert [(stats[n]["in"], stats[n]["out"]) for n in ("add", "split", "drop", "next", "add2")] \
        == [(300, 300), (300, 900), (900, 450), (450, 450), (450, 450)]
    records = [json.loads(x)["steps"] for x in (fused / "stats.jsonl").read_text().splitlines()]
    assert all(max(r[n]["workers"] for r in records) == 2 and stats[n]["latency_p50_ms"] > 0
               for n in ("add", "split", "drop", "next", "add2"))
    assert [(stats[n]["in"], stats[n]["out"]) for n in ("add", "split", "drop", "next", "add2")] \
        == [(last_stats(unfused)[n]["in"], last_stats(unfused)[n]["out"])
            for n in ("add", "split", "drop", "next", "add2")]
    assert all(s["group"] is None for s in last_stats(unfused).values())


FAILING = """
name: failing
steps:
  - {name: read, use: "tests.steps:Counter", with: {n: 1000}, to: [add]}
  - {name: add, use: "tests.steps:AddOne", workers: 2, to: [check]}
  - {name: check, use: "tests.steps:FailOn", with: {fail_on: FAILS}, to: [more]}
  - {name: more, use: "tests.steps:AddOne", to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
router: {dead_letter: OUT/dl.jsonl, max_retries: 2}
"""


def test_a_step_raising_inside_a_chain_is_dead_lettered_under_its_name_and_replayed(tmp_path):
    fails = list(range(5, 1000, 100))            # 1 % of the events
    cfg = tmp_path / "p.yaml"
    cfg.write_text(FAILING.replace("OUT", str(tmp_path)).replace("FAILS", str(fails)))
    first = subprocess.run([sys.executable, "-m", "flow.cli", "run", str(cfg), "--quiet",
                            "--stats-jsonl", str(tmp_path / "stats.jsonl")],
                           cwd=ROOT, capture_output=True, timeout=120)
    assert first.returncode == EXIT_PARTIAL, first.stderr.decode()[-2000:]
    out = collections.Counter(r["key"] for r in read_jsonl(str(tmp_path / "out.jsonl")))
    failing = {str(i) for i in fails}
    assert set(out) == {str(i) for i in range(1000)} - failing and max(out.values()) == 1
    dead = [json.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert sorted(d["key"] for d in dead) == sorted(failing)
    assert all(d["step"] == "check" and d["attempts"] == 2 and "Traceback" in d["traceback"]
               and "FailOn: i=" in d["traceback"] for d in dead)
    stats = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])["steps"]
    assert stats["check"]["group"] == "add"
    assert (stats["check"]["errors"], stats["check"]["retries"], stats["check"]["dead_letter"]) \
        == (20, 10, 10)
    assert stats["add"]["errors"] == stats["more"]["errors"] == 0
    # the dead letter holds what `check` received (after `add`): replay runs check -> more -> write
    again = subprocess.run([sys.executable, "-m", "flow.cli", "replay", str(tmp_path / "dl.jsonl"),
                            "--set", "check.fail_on=[]", "--quiet"],
                           cwd=ROOT, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    final = {r["key"]: r["event"] for r in read_jsonl(str(tmp_path / "out.jsonl"))}
    assert set(final) == {str(i) for i in range(1000)}
    assert all(final[k]["value"] == int(k) + 2 for k in final)   # add and more, once each


def test_kill_9_of_chain_workers_mid_run_loses_and_duplicates_nothing(tmp_path):
    graph = load(tmp_path, """
        name: kill
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 4000}, to: [work]}
          - {name: work, use: "tests.steps:Sleep", with: {ms: 0.3}, workers: 2, to: [add]}
          - {name: add, use: "tests.steps:AddOne", to: [split]}
          - {name: split, use: "tests.steps:Split", with: {parts: 2}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl, max_retries: 50, heartbeat_s: 0.5}
        """)
    killed: list = []
    rng = random.Random(2)
    summary = run_watching(graph, tmp_path, 0.25,
                           lambda router: kill_random_worker(router, rng, ("work",), killed))
    assert len(killed) >= 3, "the test must actually kill chain workers"
    out = collections.Counter(r["key"] for r in read_jsonl(str(tmp_path / "out.jsonl")))
    assert set(out) == {f"{i}/{k}" for i in range(4000) for k in range(2)}
    assert max(out.values()) == 1, "exactly once at the consumer"
    values = {r["key"]: r["event"]["value"] for r in read_jsonl(str(tmp_path / "out.jsonl"))}
    assert all(values[f"{i}/0"] == i + 1 for i in range(4000))
    assert summary.exit_code == EXIT_OK and summary.workers_started > 4


def test_fuse_false_splits_a_chain_into_its_own_workers(tmp_path):
    graph = load(tmp_path, """
        name: split
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 200}, to: [a]}
          - {name: a, use: "tests.steps:AddOne", to: [b]}
          - {name: b, use: "tests.steps:AddOne", to: [c]}
          - {name: c, use: "tests.steps:AddOne", fuse: false, to: [d]}
          - {name: d, use: "tests.steps:AddOne", to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        """)
    seen: dict = {}

    def on_start(router, publisher):
        seen.update({n: (st.group, len(st.members)) for n, st in router.steps.items()})

    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "run"),
                                    stats_jsonl=str(tmp_path / "stats.jsonl"), on_start=on_start))
    assert summary.exit_code == EXIT_OK
    # a and b fuse; c has fuse: false and d is left alone after it: 5 processes, not 6
    assert seen == {"read": ("", 0), "a": ("a", 2), "b": ("a", 0), "c": ("", 0), "d": ("", 0),
                    "write": ("", 0)}
    assert summary.workers_started == 5
    stats = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])["steps"]
    assert [stats[n]["group"] for n in "abcd"] == ["a", "a", None, None]
    assert all(stats[n]["in"] == stats[n]["out"] == 200 for n in "abcd")
    assert {r["event"]["value"] - r["event"]["i"] for r in read_jsonl(str(tmp_path / "out.jsonl"))} \
        == {4}


def h5_tables(path) -> dict:
    """Every table of an output file (not the provenance), rows sorted by their index columns."""
    import numpy as np
    import tables
    out = {}
    with tables.open_file(str(path)) as f:
        for node in f.walk_nodes("/", "Table"):
            if node._v_pathname.startswith("/configuration"):
                continue
            data = node.read()
            order = [c for c in ("obs_id", "event_id", "tel_id", "key") if c in data.dtype.names]
            out[node._v_pathname] = np.sort(data, order=order) if order else data
    return out


def assert_same_tables(a, b) -> None:
    import numpy as np
    ta, tb = h5_tables(a), h5_tables(b)
    assert set(ta) == set(tb) and len(ta) > 3
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and len(ta[name]) == len(tb[name]), name
        for col in ta[name].dtype.names:   # value by value; NaN where NaN
            np.testing.assert_array_equal(ta[name][col], tb[name][col], err_msg=f"{name}:{col}")


def run_config(tmp_path, config: str, fuse: bool, **overrides):
    from dataclasses import replace

    from flow.graph.loader import load_graph
    out = tmp_path / f"{'fused' if fuse else 'unfused'}.h5"
    graph = load_graph(os.path.join(ROOT, config), {"write.path": str(out), **overrides})
    graph = replace(graph, router=replace(graph.router, fuse=fuse,
                                          dead_letter=str(tmp_path / "dl.jsonl")))
    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / f"run-{fuse}"),
                                    scale=False))   # a fixed worker count: processes counted
    assert summary.exit_code == EXIT_OK and summary.dead_letter == 0
    return out, summary


def test_demo_fused_and_unfused_write_identical_tables(tmp_path):
    fused, s1 = run_config(tmp_path, "configs/demo.yaml", True, **{"read.n_events": 60})
    unfused, s2 = run_config(tmp_path, "configs/demo.yaml", False, **{"read.n_events": 60})
    assert s1.consumed == s2.consumed == {"write": 60}
    from flow.graph.loader import load_graph
    n_steps = len(load_graph(os.path.join(ROOT, "configs/demo.yaml")).steps)
    assert s1.workers_started == 3 and s2.workers_started == n_steps   # read, the chain, write
    assert_same_tables(fused, unfused)


def test_simtel_dl2_fused_and_unfused_write_identical_tables(tmp_path):
    fused, s1 = run_config(tmp_path, "configs/simtel_dl2.yaml", True)     # the whole file
    unfused, s2 = run_config(tmp_path, "configs/simtel_dl2.yaml", False)
    assert s1.consumed == s2.consumed and s1.produced == s2.produced >= 9
    assert_same_tables(fused, unfused)


# -------------------------------------------------------------------------- FusedChain, alone
def chain_of(*steps):
    from flow.engine.fused import FusedChain, Member
    from flow.graph.step import instantiate
    names = [f"s{i}" for i in range(len(steps))]
    members = []
    for i, (cls, params) in enumerate(steps):
        targets = (names[i + 1],) if i + 1 < len(steps) else ("out",)
        members.append(Member(names[i], instantiate(cls, "stager", names[i], params, {}), i + 1,
                              targets))
    return FusedChain(members)


def test_a_chain_runs_its_steps_in_order_with_keys_and_paths_as_unfused():
    from tests.steps import AddOne, DropOdd, Split
    chain = chain_of((AddOne, {}), (Split, {"parts": 2}), (DropOdd, {}))
    out, failure = chain.run("7", "0", {"i": 2, "value": 2})
    assert failure is None
    assert [(k, p, t, ev["value"], ev["part"]) for k, p, t, ev in out] == \
        [("7/0", "0.1.2.3", "", 3, 0), ("7/1", "0.1.2.3", "", 3, 1)]
    assert chain.run("8", "0", {"i": 3, "value": 3}) == ([], None)     # dropped by s2
    counts = chain.take_counts()
    assert [c[:3] for c in counts] == [[2, 2, 2], [2, 2, 4], [4, 4, 2]]
    assert all(c[3] >= 0 for c in counts) and chain.take_counts()[0][:3] == [0, 0, 0]


def test_a_failing_step_loses_only_its_event_and_snapshots_its_input_when_careful():
    from tests.steps import FailOn, Split
    chain = chain_of((Split, {"parts": 3}), (FailOn, {"fail_on": [5]}))
    out, failure = chain.run("k", "0", {"i": 5, "value": 5})
    assert out == [] and failure[0] == "RuntimeError: FailOn: i=5" and failure[2] == "s1"
    assert "Traceback" in failure[1] and len(failure) == 3
    out, failure = chain.run("k", "0", {"i": 5, "value": 5}, careful=True)
    key, path, frames = failure[3:]
    from flow.wire import codec
    assert (key, path) == ("k/0", "0.1") and codec.decode(frames) == {"i": 5, "value": 5, "part": 0}
    out, failure = chain.run("k", "0", {"i": 4, "value": 4})
    assert failure is None and [k for k, *_ in out] == ["k/0", "k/1", "k/2"]


def test_one_event_through_dict_steps_takes_the_short_path_with_the_same_results():
    from tests.steps import AddOne, FailOn
    chain = chain_of((AddOne, {}), (FailOn, {"fail_on": [3]}), (AddOne, {}))
    assert chain.run("1", "0", {"i": 1, "value": 1}) == \
        ([("1", "0.1.2.3", "", {"i": 1, "value": 3})], None)
    out, failure = chain.run("3", "0", {"i": 3, "value": 3})
    assert out == [] and failure[0] == "RuntimeError: FailOn: i=3" and failure[2] == "s1"
    assert [c[:3] for c in chain.take_counts()] == [[2, 2, 2], [2, 1, 1], [1, 1, 1]]
