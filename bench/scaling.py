"""Auto-scaling against static allocations, a rate-doubling scenario, and the router RSS bound.

    python bench/scaling.py [--quick]

A. CPU budget 2 (``router: {cpu_budget: 2}``): producer -> light (1 ms busy loop) -> heavy (8 ms busy
   loop) -> consumer, the same number of events for every allocation. "Static allocations that fit
   the budget" are all (light, heavy) worker counts with a, b >= 1 and a + b <= cpu_budget: with
   budget 2 that is (1, 1) only. (1, 2) and (2, 1) are run too, as over-budget references (they use 3
   cores' worth of workers), but are NOT eligible as "best static". The auto-scaled run has
   ``workers: {min: 1, max: 3}`` on both stagers; the scaler must keep within the budget, so the
   best it can do is match (1, 1). events/s is taken from the consumer's first to last event.
   autoscale_vs_best_static = auto events/s / best eligible static events/s (medians over repeats).

B. Rate doubling: a rate-limited producer (bench/steps.py: Rated) at R Hz, 2R Hz after T s, into the
   same two stagers, auto-scaled (min 1, max 3) under cpu_budget 3 (with budget 2 and min 1 each no
   step can ever gain a worker, so there would be nothing to settle). R is chosen so that the heavy
   step needs 1 worker before and 2 after the doubling. From the stats records (``stats_jsonl``):
   settle_s = time from the doubling until (i) the last worker-count change and (ii) every stager
   queue stays at or below 2 x batch_max (one producer batch landing plus one in flight: no
   backlog), whichever is later. changes_per_min_steady = worker-count changes per minute during
   the steady windows: phase 1 after a 10 s warm-up, and phase 2 after settling.
   Run twice: with ``batch_max: 4`` (reported in the JSON line) and with the default (256, in
   "detail"): a producer sends a partial batch 5 ms after its first event (flow/engine/worker.py
   BATCH_FLUSH_S), so a slow source is not bunched into bursts of batch_max events.

C. RSS bound: a fast producer of 1 MB events into a 20 ms stager with queue_limit_bytes = 16 MB.
   The router process's RSS (psutil, sampled every 0.25 s) must stay below
   start RSS + limit, limit = for each step with a queue, queue_limit_bytes + prefetch x 5 MB (the
   overshoot of producer batches granted before the queue filled; a PRODUCE batch stops at >= 4 MB)
   + for each stager/consumer worker, prefetch x 8 MB (leases, capped at 8 MB each) + 32 MB slack.

The last line printed is one JSON object (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

from flow.engine.run import RunOptions, run  # noqa: E402
from flow.graph.model import RouterOptions, step  # noqa: E402

LIGHT_MS, HEAVY_MS = 1.0, 8.0


def run_quiet(graph, run_dir: str, **kw):
    """`flow.engine.run.run` quietly (the summary table run() prints even when quiet is swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run(graph, RunOptions(quiet=True, view=False, run_dir=run_dir, **kw))


def two_stage(source, light, heavy, stamp: str, opts: RouterOptions):
    return (source
            | step("light", "bench.steps:Burn", workers=light, ms=LIGHT_MS)
            | step("heavy", "bench.steps:Burn", workers=heavy, ms=HEAVY_MS)
            | step("sink", "bench.steps:Stamp", path=stamp)).graph("bench-scaling", router=opts)


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------- A
def one_run(light, heavy, n: int, tmp: str) -> dict:
    run_dir = tempfile.mkdtemp(prefix="run-", dir=tmp)
    stamp = os.path.join(run_dir, "stamp.json")
    stats = os.path.join(run_dir, "stats.jsonl")
    g = two_stage(step("source", "bench.steps:Payload", n=n, size=100), light, heavy, stamp,
                  RouterOptions(cpu_budget=2))
    summary = run_quiet(g, run_dir, stats_jsonl=stats)
    rec = json.loads(Path(stamp).read_text())
    if rec["n"] != n:
        raise RuntimeError(f"lost events: {rec['n']} of {n}")
    records = read_jsonl(stats)
    changes = sum(len(r.get("decisions", [])) for r in records)
    t_first = records[0]["t"] if records else 0.0
    for r in records:
        for d in r.get("decisions", []):
            fin = {s: r["steps"][s]["finished"] for s in ("light", "heavy")}
            print(f"      t={d['t'] - t_first:5.1f}s {d['step']} {d['old']} -> {d['new']} "
                  f"(finished: {fin}): {d['reason']}")
    peak = {s: max((r["steps"][s]["workers"] for r in records), default=0)
            for s in ("light", "heavy")}
    return {"ev_s": (n - 1) / (rec["last"] - rec["first"]), "wall_s": summary.wall_s,
            "changes": changes, "peak_workers": peak}


def static_vs_auto(quick: bool, tmp: str) -> dict:
    n = 400 if quick else 1000
    repeats = 3 if quick else 5
    budget = 2
    eligible = [(a, b) for a in range(1, budget + 1) for b in range(1, budget + 1) if a + b <= budget]
    reference = [(1, 2), (2, 1)]
    auto = ((1, 3), (1, 3))
    res: dict[str, list] = {}
    extra: dict[str, dict] = {}
    print(f"A. budget {budget}: light {LIGHT_MS:g} ms -> heavy {HEAVY_MS:g} ms, {n} events; "
          f"eligible static (a+b <= {budget}): {eligible}; over-budget references: {reference}")
    for rep in range(repeats):
        configs = [(f"static {a}+{b}", a, b) for a, b in eligible] + \
                  [("auto 1..3", *auto)] + \
                  ([(f"ref {a}+{b}", a, b) for a, b in reference] if rep == 0 or not quick else [])
        for label, a, b in configs:
            r = one_run(a, b, n, tmp)
            res.setdefault(label, []).append(r["ev_s"])
            if label.startswith("auto"):
                extra.setdefault("changes", []).append(r["changes"])
                extra.setdefault("peak", []).append(r["peak_workers"])
            print(f"  repeat {rep + 1}/{repeats} {label:<11} {r['ev_s']:7.1f} ev/s  "
                  f"wall {r['wall_s']:.1f} s" + (f"  scaler changes {r['changes']}, peak workers "
                                                 f"{r['peak_workers']}" if label.startswith("auto")
                                                 else ""), flush=True)
    med = statistics.median
    best_label = max((f"static {a}+{b}" for a, b in eligible), key=lambda k: med(res[k]))
    # ratio per repeat against the eligible static of the same repeat, then the median
    ratios = [x / y for x, y in zip(res["auto 1..3"], res[best_label], strict=True)]
    print(f"{'allocation':<12} {'median ev/s':>11} {'runs':>5}")
    for label, v in res.items():
        print(f"{label:<12} {med(v):>11.1f} {len(v):>5}")
    print(f"autoscale / best eligible static ({best_label}): {med(ratios):.3f} "
          f"(median of per-repeat ratios); ideal pipeline bound 1000/{HEAVY_MS:g} ms = "
          f"{1000 / HEAVY_MS:.0f} ev/s with one heavy worker")
    return {"autoscale_vs_best_static": med(ratios), "best_static": best_label,
            "ev_s": {k: round(med(v), 1) for k, v in res.items()},
            "auto_changes_per_run": extra.get("changes"), "auto_peak_workers": extra.get("peak")}


# --------------------------------------------------------------------------------------------- B
def rate_doubling(quick: bool, tmp: str, batch_max: int) -> dict:
    rate, t_double = 70.0, (20.0 if quick else 40.0)
    duration = t_double + (25.0 if quick else 60.0)
    opts = RouterOptions(cpu_budget=3, batch_max=batch_max)
    run_dir = tempfile.mkdtemp(prefix="run-rate-", dir=tmp)
    stamp, stats, mark = (os.path.join(run_dir, f) for f in ("stamp.json", "stats.jsonl",
                                                               "mark.json"))
    src = step("source", "bench.steps:Rated", rate_hz=rate, double_after_s=t_double,
               duration_s=duration, mark=mark)
    print(f"B. rate doubling: {rate:g} Hz -> {2 * rate:g} Hz after {t_double:g} s, "
          f"{duration:g} s in all, cpu_budget 3, batch_max {batch_max}, both stagers workers "
          f"{{min: 1, max: 3}}")
    summary = run_quiet(two_stage(src, (1, 3), (1, 3), stamp, opts), run_dir, stats_jsonl=stats)
    records = read_jsonl(stats)
    m = json.loads(Path(mark).read_text())
    t0, td, t_end = m["start"], m["doubled"], m["start"] + duration
    decisions = [d for r in records for d in r.get("decisions", [])]
    for d in decisions:
        print(f"  t={d['t'] - t0:6.1f}s scaler {d['step']} {d['old']} -> {d['new']}: {d['reason']}")
    qbound = 2 * opts.batch_max
    after = [r for r in records if td <= r["t"] <= t_end]
    last_change = max((d["t"] for d in decisions if d["t"] >= td), default=td)
    q_ok_from = td
    for r in after:  # the latest record at which some queue was above the bound
        if any(r["steps"][s]["queue"] > qbound for s in ("light", "heavy")):
            q_ok_from = r["t"]
    settled_t = max(last_change, q_ok_from)
    settle = settled_t - td
    # steady windows: phase 1 after a 10 s warm-up, phase 2 after settling (until the end)
    windows = [(t0 + 10.0, td), (settled_t, t_end)]
    minutes = sum(max(0.0, b - a) for a, b in windows) / 60
    n_steady = sum(1 for d in decisions for a, b in windows if a < d["t"] <= b)
    per_min = n_steady / minutes if minutes > 0 else float("nan")

    def phase(a, b):
        rs = [r for r in records if a <= r["t"] <= b]
        return ({s: statistics.median(r["steps"][s]["workers"] for r in rs) for s in
                 ("light", "heavy")} if rs else {},
                max((r["steps"]["heavy"]["queue"] for r in rs), default=0),
                statistics.median(r["steps"]["sink"]["rate"] for r in rs) if rs else 0.0)
    w1, q1, r1 = phase(t0 + 10, td)
    w2, q2, r2 = phase(settled_t, t_end)
    print(f"  phase 1 (steady): median workers {w1}, max heavy queue {q1}, sink {r1:.0f} ev/s")
    print(f"  phase 2 (after settling): median workers {w2}, max heavy queue {q2}, "
          f"sink {r2:.0f} ev/s")
    print(f"  settle_s = {settle:.1f} s (last change {last_change - td:+.1f} s, queues <= {qbound} "
          f"from {q_ok_from - td:+.1f} s after the doubling); changes in steady windows: "
          f"{n_steady} over {minutes:.2f} min = {per_min:.2f}/min; run {summary.state}, "
          f"{summary.produced} events")
    return {"settle_s": settle, "changes_per_min_steady": per_min, "phase1_workers": w1,
            "phase2_workers": w2, "decisions": len(decisions), "batch_max": batch_max}


# --------------------------------------------------------------------------------------------- C
def rss_bound(quick: bool, tmp: str) -> dict:
    import psutil

    qlb = 16 << 20
    size = 1 << 20
    n = 250 if quick else 600
    opts = RouterOptions(queue_limit_bytes=qlb, cpu_budget=2)
    run_dir = tempfile.mkdtemp(prefix="run-rss-", dir=tmp)
    stamp = os.path.join(run_dir, "stamp.json")
    g = (step("source", "bench.steps:Payload", n=n, size=size)
         | step("slow", "bench.steps:Burn", ms=20.0)
         | step("sink", "bench.steps:Stamp", path=stamp)).graph("bench-rss", router=opts)
    me = psutil.Process()
    start = me.memory_info().rss
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(me.memory_info().rss)
            stop.wait(0.25)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stats = os.path.join(run_dir, "stats.jsonl")
    summary = run_quiet(g, run_dir, stats_jsonl=stats)
    stop.set()
    th.join()
    queued_steps, workers = 2, 2            # slow and sink have queues; one worker each
    limit = queued_steps * (qlb + opts.prefetch * (5 << 20)) + workers * opts.prefetch * (8 << 20) \
        + (32 << 20)
    peak = max(samples)
    qmax = max((r["steps"]["slow"]["queue_bytes"] for r in read_jsonl(stats)), default=0)
    ok = peak - start <= limit
    mb = 1 / (1 << 20)
    print(f"C. RSS bound: {n} x 1 MB events into a 20 ms stager, queue_limit_bytes 16 MB: router RSS "
          f"start {start * mb:.0f} MB, peak {peak * mb:.0f} MB (+{(peak - start) * mb:.0f} MB), "
          f"limit +{limit * mb:.0f} MB -> {'ok' if ok else 'EXCEEDED'}; max queued bytes seen in "
          f"stats {qmax * mb:.1f} MB; run {summary.state}")
    return {"rss_bound_ok": ok, "rss_peak_growth_mb": round((peak - start) * mb, 1),
            "rss_limit_mb": round(limit * mb, 1), "max_queue_mb": round(qmax * mb, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events and repeats (< 3 min)")
    a = p.parse_args(argv)
    os.chdir(ROOT)
    tmp = tempfile.mkdtemp(prefix="flow-bench-scaling-")
    t = time.monotonic()
    A = static_vs_auto(a.quick, tmp)
    B = rate_doubling(a.quick, tmp, batch_max=4)
    B64 = rate_doubling(a.quick, tmp, batch_max=RouterOptions().batch_max)
    C = rss_bound(a.quick, tmp)
    print(f"total {time.monotonic() - t:.0f} s")
    out = {"autoscale_vs_best_static": round(A["autoscale_vs_best_static"], 4),
           "settle_s": round(B["settle_s"], 2),
           "changes_per_min_steady": round(B["changes_per_min_steady"], 2),
           "rss_bound_ok": C["rss_bound_ok"],
           "detail": {"static_auto_ev_s": A["ev_s"], "best_static": A["best_static"],
                      "auto_peak_workers": A["auto_peak_workers"],
                      "phase1_workers": B["phase1_workers"], "phase2_workers": B["phase2_workers"],
                      "default_batch_max": {k: B64[k] for k in ("settle_s", "changes_per_min_steady",
                                                                "phase1_workers",
                                                                "phase2_workers")},
                      "rss_peak_growth_mb": C["rss_peak_growth_mb"],
                      "rss_limit_mb": C["rss_limit_mb"], "max_queue_mb": C["max_queue_mb"]}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
