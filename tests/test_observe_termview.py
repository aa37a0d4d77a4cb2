"""flow.observe.termview: the live table fits 80, 100 and 160 columns, one line per step, values there."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from flow.observe.termview import (
    TermView,
    fmt_bytes,
    fmt_count,
    fmt_ms,
    fmt_rate,
    middle_cut,
    render,
)

LONG_A = "calibrate_waveforms_of_the_large_telescopes"
LONG_B = "calibrate_waveforms_of_the_small_telescopes"


def step(kind="stager", **kw) -> dict:
    s = {"kind": kind, "in": 0, "out": 0, "done": 0, "rate": 0.0, "arrivals": 0.0,
         "rate_avg": 0.0, "queue": 0, "queue_bytes": 0, "inflight": 0, "workers": 1,
         "workers_min": 1, "workers_max": 1 if kind != "stager" else 8, "busy": 0.0,
         "service_s": 0.0, "latency_p50_ms": 0.0, "latency_p99_ms": 0.0, "errors": 0,
         "retries": 0, "dead_letter": 0, "finished": False, "bottleneck": False}
    s.update(kw)
    return s


def record(state="running", **over) -> dict:
    steps = {
        "read": step("producer", **{"in": 12345, "out": 12345, "rate": 1234.0,
                                    "rate_avg": 1100.0}),
        LONG_A: step(**{"in": 12345, "out": 12000, "rate": 987.0, "rate_avg": 900.0,
                        "queue": 345, "queue_bytes": 3_565_158, "inflight": 77, "workers": 4,
                        "busy": 0.93, "latency_p50_ms": 4.21, "bottleneck": True}),
        LONG_B: step(**{"in": 12000, "out": 11990, "rate": 980.5, "rate_avg": 890.0,
                        "workers": 2, "busy": 0.41, "errors": 3, "latency_p50_ms": 0.42}),
        "write": step("consumer", **{"in": 11990, "rate": 975.0, "rate_avg": 880.0,
                                     "dead_letter": 2}),
    }
    rec = {"state": state, "elapsed_s": 12.5, "produced": 12345, "total": 20000,
           "progress": 12345 / 20000, "eta_s": 6.2, "steps": steps,
           "decisions": [{"step": LONG_A, "old": 2, "new": 4,
                          "reason": "queue 345 growing at 120/s, busy 93%: demand 3.6 workers "
                                    "for a target busy of 85%; cpu budget 14 shared"}]}
    rec.update(over)
    return rec


def lines_at(rec, width, final=False) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, force_terminal=False, color_system=None).print(
        render(rec, width, final=final))
    return out.getvalue().splitlines()


def table_rows(lines: list[str]) -> dict[str, str]:
    """Step lines by their (possibly cut) name, and the header as ``"step"``."""
    start = next(i for i, line in enumerate(lines) if line.startswith("step"))
    rows = {"step": lines[start]}
    for line in lines[start + 2:start + 6]:
        rows[line.split()[0]] = line
    return rows


@pytest.mark.parametrize("width", [80, 100, 160])
def test_every_line_fits_and_each_step_is_one_line(width):
    lines = lines_at(record(), width)
    assert all(len(line) <= width for line in lines), max(map(len, lines))
    rows = table_rows(lines)
    assert len(rows) == 5                                   # header + 4 steps, one line each
    assert lines[0].startswith("flow · running · 12.5 s")
    assert "62%" in lines[-2] and "12k/20k" in lines[-2] and "ETA 6 s" in lines[-2]
    assert lines[-1].startswith(f"scaler: {LONG_A[:20]}")   # the decision, cut, not wrapped
    header = rows["step"].split()
    for col in ("rate/s", "queue", "workers", "busy", "in", "out"):  # these always stay
        assert col in header, (width, header)


def test_80_columns_keep_the_valued_columns_and_cut_names_in_the_middle():
    rows = table_rows(lines_at(record(), 80))
    header = rows["step"].split()
    assert "kind" not in header and "inflight" not in header
    names = [n for n in rows if n != "step"]
    assert names[0] == "read" and names[-1] == "write"
    cut_a, cut_b = names[1], names[2]
    assert "…" in cut_a and "…" in cut_b and cut_a != cut_b            # unambiguous
    assert LONG_A.startswith(cut_a.split("…")[0]) and LONG_A.endswith(cut_a.split("…")[1])
    a = rows[cut_a]
    assert "◀" in a                                                    # the bottleneck mark
    for value in ("12k", "987", "345", "4 [1-8]", "93%"):
        assert re.search(rf"(^|\s){re.escape(value)}(\s|$)", a), (value, a)
    assert "1.2k" in rows["read"]                                      # humanised rate


def test_wider_terminals_show_more():
    h80, h100, h160 = (table_rows(lines_at(record(), w))["step"].split() for w in (80, 100, 160))
    assert len(h80) < len(h100) <= len(h160)
    for col in ("kind", "inflight", "p99", "retries", "dead", "errors", "size"):
        assert col in h160, col
    rows = table_rows(lines_at(record(), 160))
    assert LONG_A in rows and LONG_B in rows                           # full names
    assert "3.4 MB" in rows[LONG_A] and "stager" in rows[LONG_A] and " 77 " in rows[LONG_A]


def test_final_table_shows_average_rates_and_totals():
    rec = record(state="finished", progress=1.0, decisions=[])
    for s in rec["steps"].values():
        s.update(rate=0.0, workers=0, busy=0.0)      # what the last record of a run says
    view = TermView(quiet=True)
    view.update(record())
    view.update(rec)
    lines = lines_at(view.final_record(), 80, final=True)
    assert "12k events, 988/s on average" in lines[0]
    rows = table_rows(lines)
    assert "avg/s" in rows["step"] and "peak" in rows["step"]
    assert "1.1k" in rows["read"] and "880" in rows["write"]
    cut = [n for n in rows if n.startswith("cali")][0]
    assert " 900 " in rows[cut] and "4 [1-8]" in rows[cut] and "93%" in rows[cut]
    assert all(len(line) <= 80 for line in lines)


def test_termview_live_then_final_on_a_console():
    out = io.StringIO()
    view = TermView(console=Console(file=out, width=80, force_terminal=True))
    view.update(record())
    view.update(record(state="finished", progress=1.0))
    view.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "rate/s" in text and "avg/s" in text and "on average" in text


def test_humanised_numbers():
    assert [fmt_count(n) for n in (0, 999, 1000, 1234, 12345, 999_499, 1_234_567)] == \
        ["0", "999", "1.0k", "1.2k", "12k", "999k", "1.2M"]
    assert [fmt_rate(r) for r in (0, 0.42, 9.5, 532.4, 1234)] == ["0", "0.4", "9.5", "532", "1.2k"]
    assert [fmt_bytes(b) for b in (0, 512, 3482, 3_565_158, 12 * 2**20, 1.5 * 2**30)] == \
        ["0 B", "512 B", "3.4 KB", "3.4 MB", "12 MB", "1.5 GB"]
    assert [fmt_ms(m) for m in (0, 0.421, 4.21, 42.1, 1234)] == ["0", "0.42", "4.2", "42", "1.2k"]


def test_middle_cut_keeps_names_distinct():
    names = ["read", LONG_A, LONG_B, "calibrate_waveforms_x_telescopes"]
    cut = middle_cut(names, 12)
    assert cut["read"] == "read"
    assert all(len(c) <= 12 for c in cut.values())
    assert len(set(cut.values())) == len(names)
