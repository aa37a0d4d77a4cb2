"""flow.observe.report: PNG plots from a synthetic stats JSON-lines file."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")

from flow.errors import FlowError  # noqa: E402
from flow.observe.report import legend_label, main, make_report, read_stats, series  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def stats(run: str, k: int) -> dict:
    steps = {name: {"kind": "stager", "in": 10 * k, "out": 10 * k, "rate": 10.0 + i * k,
                    "queue": k * i, "workers": 1 + (k >= 5 and name == "b")}
             for i, name in enumerate(("a", "b", "c"))}
    decisions = [{"t": 1000.0 + k, "step": "b", "old": 1, "new": 2, "reason": "queue"}] if k == 5 else []
    return {"v": 1, "type": "stats", "run_id": run, "t": 1000.0 + k, "state": "running",
            "steps": steps, "decisions": decisions, "dead_letters": []}


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "run.jsonl"
    lines = [json.dumps(stats("old", k)) for k in range(3)]
    lines += [json.dumps({"v": 1, "type": "log", "t": 1.0, "level": "INFO", "message": "x"}), ""]
    lines += [json.dumps(stats("new", k)) for k in range(10)]
    path.write_text("\n".join(lines) + '\n{"v": 1, "type": "sta')  # truncated last line
    return path


def test_reads_last_run_and_skips_other_lines(jsonl):
    recs = read_stats(jsonl)
    assert len(recs) == 10 and {r["run_id"] for r in recs} == {"new"}
    t, values = series(recs, "queue")
    assert t == [float(k) for k in range(10)]
    assert values["c"] == [2.0 * k for k in range(10)]


def test_writes_three_pngs(jsonl, tmp_path):
    files = make_report(jsonl, tmp_path / "out")
    assert sorted(f.name for f in files) == ["queue.png", "rate.png", "workers.png"]
    for f in files:
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 5000


def test_cli(jsonl, tmp_path, capsys):
    assert main(["report", str(jsonl), "-o", str(tmp_path / "cli")]) == 0
    assert "rate.png" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    assert main([str(empty), "-o", str(tmp_path / "x")]) == 2
    with pytest.raises(FlowError, match="no stats records"):
        read_stats(empty)


def test_a_failed_run_says_why(tmp_path, capsys):
    path = tmp_path / "failed.jsonl"
    recs = [stats("f", k) for k in range(3)]
    recs[1]["restarts"] = [{"t": 1001.5, "step": "b", "action": "restart", "cause": "signal",
                            "delay_s": 0.1, "reason": "killed by SIGKILL; replaced after 0.10 s"}]
    recs[2].update(state="failed", failures=["step 'b' failed in setup: RuntimeError: no table"])
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    assert main([str(path), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "failed: step 'b' failed in setup: RuntimeError: no table" in printed
    text = (tmp_path / "out" / "outcome.txt").read_text()
    assert "run f: failed" in text and "failure: step 'b' failed in setup" in text
    assert "restart:    1.50 s  step 'b' restart (signal): killed by SIGKILL" in text


def test_fused_steps_are_named_with_their_chain_in_the_legends():
    groups = {"calibrate": "calibrate", "clean": "calibrate"}
    assert legend_label("clean", groups) == "clean [fused: calibrate]"
    assert legend_label("write", groups) == "write"
