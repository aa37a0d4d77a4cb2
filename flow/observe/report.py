"""`flow report RUN.jsonl -o DIR`: PNG plots of a finished (or running) run from its stats JSON lines.

Each line of the input is one stats record (docs/monitoring.md) as JSON; lines of other types, blank
lines and lines that do not parse are skipped (a run killed mid-write leaves a truncated last line).
When the file holds several runs, the last one is plotted. Output: ``rate.png``, ``queue.png`` and
``workers.png`` (scaler decisions as triangles, worker restarts as crosses) per step over time, with
matplotlib's Agg backend, and ``outcome.txt``: the run's last state, every failure reason and every
restart decision. A failed run's reasons are also written on each chart and printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flow.errors import FlowError


def read_stats(path: str | Path) -> list[dict]:
    """The stats records of the last run in a JSON-lines file, in time order."""
    records: list[dict] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("type", "stats") == "stats" and "steps" in rec:
                    records.append(rec)
    except OSError as exc:
        raise FlowError(f"cannot read {path}: {exc.strerror}") from exc
    if not records:
        raise FlowError(f"{path}: no stats records (one JSON object per line, type 'stats')")
    last_run = records[-1].get("run_id")
    records = [r for r in records if r.get("run_id") == last_run]
    return sorted(records, key=lambda r: r.get("t") or 0.0)


def series(records: list[dict], field: str) -> tuple[list[float], dict[str, list[float]]]:
    """Seconds since the first record, and ``field`` per step (NaN where a step is missing)."""
    t0 = records[0].get("t") or 0.0
    t = [(r.get("t") or t0) - t0 for r in records]
    names: list[str] = []
    for r in records:
        names += [n for n in r["steps"] if n not in names]
    values = {n: [float(r["steps"].get(n, {}).get(field) or 0.0) if n in r["steps"] else float("nan")
                  for r in records] for n in names}
    return t, values


def outcome(records: list[dict]) -> tuple[str, list[str], list[dict]]:
    """(last state, failure reasons, restart decisions) of a run's records."""
    last = records[-1]
    failures: list[str] = []
    for r in records:   # reasons accumulate; keep each once, in order
        failures += [f for f in r.get("failures") or [] if f not in failures]
    restarts = [d for r in records for d in r.get("restarts") or [] if isinstance(d, dict)]
    return str(last.get("state", "?")), failures, restarts


def outcome_text(records: list[dict]) -> str:
    state, failures, restarts = outcome(records)
    lines = [f"run {records[-1].get('run_id', '?')}: {state}, {records[-1].get('produced', 0)} "
             f"events produced"]
    lines += [f"failure: {f}" for f in failures]
    lines += [f"warning: {w}" for w in records[-1].get("warnings") or []]
    t0 = records[0].get("t") or 0.0
    lines += [f"restart: {d.get('t', t0) - t0:7.2f} s  step '{d.get('step')}' "
              f"{d.get('action')} ({d.get('cause')}): {d.get('reason')}" for d in restarts]
    return "\n".join(lines) + "\n"


def legend_label(step: str, groups: dict) -> str:
    """A step's name in the legends, with its fused chain when it runs in one."""
    return f"{step} [fused: {groups[step]}]" if groups.get(step) else step


def make_report(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the plots of ``path`` into ``out_dir`` (and ``outcome.txt``); return the plots."""
    import matplotlib  # noqa: PLC0415 - optional dependency, imported when used

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    records = read_stats(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = records[0].get("t") or 0.0
    groups = {n: s.get("group") for r in records for n, s in r["steps"].items()
              if isinstance(s, dict) and s.get("group")}
    run = records[-1].get("run_id", "?")
    state, failures, restarts = outcome(records)
    (out / "outcome.txt").write_text(outcome_text(records))
    written = []
    for field, ylabel, name in (("rate", "rate (events/s)", "rate.png"),
                                ("queue", "queue depth (events)", "queue.png"),
                                ("workers", "workers", "workers.png")):
        t, values = series(records, field)
        fig, ax = plt.subplots(figsize=(10, 4.5), layout="constrained")
        for i, (step, y) in enumerate(values.items()):
            colour = f"C{i % 10}"
            ax.plot(t, y, label=legend_label(step, groups), color=colour, drawstyle="steps-post" if field == "workers" else None)
            if field == "workers":
                dec = [d for r in records for d in r.get("decisions") or [] if d.get("step") == step]
                ax.scatter([d["t"] - t0 for d in dec], [d["new"] for d in dec], marker="v",
                           color=colour, edgecolor="black", zorder=3)
                rs = [d for d in restarts if d.get("step") == step and "t" in d]
                ax.scatter([d["t"] - t0 for d in rs], [0.0] * len(rs), marker="x", color=colour,
                           zorder=3)
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        if field == "workers":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{ylabel} per step — run {run}" + (f" ({state})" if failures else ""))
        if failures:
            fig.text(0.01, 0.01, "\n".join(f"failed: {f}"[:160] for f in failures[:4]),
                     color="firebrick", fontsize="small", va="bottom")
        ax.grid(alpha=0.3)
        ax.legend(ncol=min(6, max(1, len(values))), fontsize="small", loc="upper left")
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        argv = argv[1:]
    p = argparse.ArgumentParser(prog="flow report", description="Plots of a run's stats JSON lines.")
    p.add_argument("jsonl", help="stats records, one JSON object per line")
    p.add_argument("-o", "--out", default="report", help="output directory (default: report)")
    args = p.parse_args(argv)
    try:
        files = make_report(args.jsonl, args.out)
    except FlowError as exc:
        print(f"flow report: {exc}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    print(Path(args.out) / "outcome.txt")
    state, failures, _ = outcome(read_stats(args.jsonl))
    for reason in failures:
        print(f"{state}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
