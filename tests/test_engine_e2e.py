"""End-to-end runs of the engine: real worker processes, real ZeroMQ sockets, exact counts by key."""

from __future__ import annotations

import collections
import json
import textwrap
import time

import pytest
import zmq

from flow.engine.run import RunOptions, run
from flow.graph.loader import graph_from_text
from flow.observe.summary import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from tests.steps import read_jsonl


def load(tmp_path, text: str):
    text = textwrap.dedent(text).replace("OUT", str(tmp_path))
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return graph_from_text(text, str(path))


# "shm": batches whose small payloads add up to 256 bytes or more travel as shared-memory blobs
# (the router moves only their names; explicit routing, retries and dead letters must see through)
TRANSPORTS = ["inline", "sockets", "shm"]


def go(tmp_path, text: str, inline: bool | str = False, **kw):
    if inline == "shm":
        text = text.replace("router: {", "router: {shm_threshold: 256, ", 1)
    inline = inline == "inline" or inline is True
    graph = load(tmp_path, text)
    opts = RunOptions(quiet=True, inline=inline, run_dir=str(tmp_path / "run"), **kw)
    return run(graph, opts)


def keys_by_step(path):
    out = collections.Counter()
    for row in read_jsonl(str(path)):
        out[row["key"]] += 1
    return out


FAN = """
name: fan
steps:
  - name: read
    use: tests.steps:Counter
    with: {n: 500}
    to: [a, b]
  - name: a
    use: tests.steps:AddOne
    workers: 2
    to: [write]
  - name: b
    use: tests.steps:AddOne
    with: {amount: 10}
    to: [write]
  - name: write
    use: tests.steps:ListConsumer
    with: {path: OUT/out.jsonl}
router: {dead_letter: OUT/dl.jsonl}
"""


@pytest.mark.parametrize("inline", TRANSPORTS)
def test_fan_out_fan_in_counts_exact_by_key(tmp_path, inline):
    summary = go(tmp_path, FAN, inline=inline)
    assert summary.exit_code == EXIT_OK
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    counts = collections.Counter(r["key"] for r in rows)
    assert counts == {str(i): 2 for i in range(500)}
    values = sorted(r["event"]["value"] - r["event"]["i"] for r in rows)
    assert values == [1] * 500 + [10] * 500
    assert summary.produced == 500
    assert summary.consumed == {"write": 1000}
    assert summary.unique_consumed == {"write": 1000}


def test_two_producers_and_eos(tmp_path):
    summary = go(tmp_path, """
        name: two
        steps:
          - {name: p1, use: "tests.steps:Counter", with: {n: 300}, to: [add]}
          - {name: p2, use: "tests.steps:Counter", with: {n: 200, start: 1000}, to: [add]}
          - {name: add, use: "tests.steps:AddOne", workers: 2, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """)
    assert summary.exit_code == EXIT_OK
    keys = keys_by_step(tmp_path / "out.jsonl")
    assert set(keys) == {str(i) for i in range(300)} | {str(i) for i in range(1000, 1200)}
    assert all(v == 1 for v in keys.values())
    assert summary.produced == 500
    # the run ends on EOS, not on a timeout: well under a second after the last event
    assert summary.eos_exit_s is not None and summary.eos_exit_s < 1.0


@pytest.mark.parametrize("inline", TRANSPORTS)
def test_drop_one_to_many_and_explicit_routing(tmp_path, inline):
    summary = go(tmp_path, """
        name: shapes
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 100}, to: [drop]}
          - {name: drop, use: "tests.steps:DropOdd", to: [split]}
          - {name: split, use: "tests.steps:Split", with: {parts: 3}, to: [route]}
          - name: route
            use: tests.steps:RouteByBranch
            with: {even: evens, odd: odds}
            to: [evens, odds]
          - {name: evens, use: "tests.steps:ListConsumer", with: {path: OUT/even.jsonl}}
          - {name: odds, use: "tests.steps:ListConsumer", with: {path: OUT/odd.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """, inline=inline)
    assert summary.exit_code == EXIT_OK
    even = keys_by_step(tmp_path / "even.jsonl")
    odd = keys_by_step(tmp_path / "odd.jsonl")
    # odd i dropped; each even i split in 3 parts keyed i/0..i/2; all even i go to `evens`
    assert set(even) == {f"{i}/{k}" for i in range(0, 100, 2) for k in range(3)}
    assert not odd
    assert summary.consumed == {"evens": 150, "odds": 0}


def test_function_stager(tmp_path):
    summary = go(tmp_path, """
        name: fn
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 50}, to: [f]}
          - {name: f, use: "tests.steps:add_one", with: {amount: 5}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """)
    assert summary.exit_code == EXIT_OK
    rows = read_jsonl(str(tmp_path / "out.jsonl"))
    assert sorted(r["event"]["value"] for r in rows) == [i + 5 for i in range(50)]


@pytest.mark.parametrize("inline", ["sockets", "shm"])
def test_step_raising_goes_to_dead_letter_and_run_goes_on(tmp_path, inline):
    stats = tmp_path / "stats.jsonl"
    summary = go(tmp_path, inline=inline, text="""
        name: fail
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 200}, to: [check]}
          - {name: check, use: "tests.steps:FailOn", with: {fail_on: [3, 50, 199]}, workers: 2,
             to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl, max_retries: 2}
        """, stats_jsonl=str(stats))
    assert summary.exit_code == EXIT_PARTIAL
    assert summary.dead_letter == 3
    keys = keys_by_step(tmp_path / "out.jsonl")
    assert set(keys) == {str(i) for i in range(200)} - {"3", "50", "199"}
    dead = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert sorted(d["key"] for d in dead) == ["199", "3", "50"]
    for d in dead:
        assert d["step"] == "check" and d["attempts"] == 2
        assert "RuntimeError: FailOn" in d["exception"] and "Traceback" in d["traceback"]
    # the monitor saw each dead letter once, with its traceback (the GUI's dead-letter list)
    published = [d for line in stats.read_text().splitlines()
                 for d in json.loads(line)["dead_letters"]]
    assert sorted(d["key"] for d in published) == ["199", "3", "50"]
    assert all("Traceback" in d["traceback"] for d in published)


def test_setup_failure_is_a_clear_error_not_a_hang(tmp_path):
    t0 = time.monotonic()
    summary = go(tmp_path, """
        name: setup
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 10}, to: [calib]}
          - {name: calib, use: "tests.engine_steps:FailSetup", to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """)
    assert time.monotonic() - t0 < 20
    assert summary.exit_code == EXIT_FAILED
    assert any("step 'calib' failed in setup" in f and "calibration table missing" in f
               for f in summary.failures)


def test_garbage_frames_are_rejected_and_counted(tmp_path):
    def attack(router, publisher):
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.connect(router.endpoint)
        s.send_multipart([b"garbage"])
        s.send_multipart([b"FLW1", b"\x04", b"\xc1\xc1"])           # malformed envelope
        s.send_multipart([b"FLW1", b"\x7f", b"\x80"])               # unknown command
        s.send_multipart([b"FLW2", b"\x01", b"\x80"])               # other version
        s.send_multipart([b"FLW1", b"\x05", b"\x81\xa5lease\x01"])  # ACK from a stranger
        time.sleep(0.1)
        s.close(0)
        attack.sent = True

    summary = go(tmp_path, """
        name: garbage
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 100}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """, on_start=attack)
    assert attack.sent
    assert summary.exit_code == EXIT_OK
    assert summary.rejected >= 4
    assert len(keys_by_step(tmp_path / "out.jsonl")) == 100


def test_summary_json_and_stats_jsonl(tmp_path):
    summary = go(tmp_path, FAN, summary_json=str(tmp_path / "s.json"),
                 stats_jsonl=str(tmp_path / "stats.jsonl"))
    data = json.loads((tmp_path / "s.json").read_text())
    for field in ("produced", "consumed", "unique_consumed", "dead_letter", "wall_s"):
        assert field in data
    assert data["produced"] == 500 and data["unique_consumed"] == {"write": 1000}
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert records and records[-1]["state"] == "finished"
    assert records[-1]["steps"]["write"]["done"] == 1000
    assert summary.exit_code == EXIT_OK


@pytest.mark.parametrize("inline", [False, True])
def test_shards_split_the_stream_without_overlap(tmp_path, inline):
    text = """
        name: shard
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 400}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/SHARD.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """
    seen = []
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
        summary = go(tmp_path / f"s{i}", text.replace("SHARD", f"part{i}"), inline=inline,
                     shard=(i, 3))
        assert summary.exit_code == EXIT_OK
        seen.append(set(keys_by_step(tmp_path / f"s{i}" / f"part{i}.jsonl")))
    assert all(40 < len(s) < 240 for s in seen)  # a hash split: about a third each
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert seen[0] | seen[1] | seen[2] == {str(i) for i in range(400)}


@pytest.mark.parametrize("what", ["failed", "items"])
def test_a_malformed_ack_is_rejected_and_its_events_are_not_lost(tmp_path, what):
    summary = go(tmp_path, """
        name: garble
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 300}, to: [garble]}
          - {name: garble, use: "tests.engine_steps:GarbleAckOnce",
             with: {at: 5, marker: OUT/garbled, what: WHAT}, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl}
        """.replace("WHAT", what))
    assert (tmp_path / "garbled").exists(), "the fault happened"
    assert summary.exit_code == EXIT_OK
    keys = keys_by_step(tmp_path / "out.jsonl")
    assert set(keys) == {str(i) for i in range(300)} and max(keys.values()) == 1
    assert summary.rejected == 1 and summary.retries >= 1 and summary.errors >= 1
