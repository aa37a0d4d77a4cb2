"""Engine throughput against raw pyzmq PUSH/PULL, measured in the same run.

    python bench/throughput.py [--quick] [--repeats N]
    python bench/throughput.py --rss [--events 100000]

For each payload size (100 B, 7 KB, 150 KB, 4 MB), interleaved within each repeat so that machine
noise hits all of them alike:

- raw: a sender process PUSHes one pre-built payload N times over ipc:// (the engine's default
  transport) to a PULL in this process; messages/s from the first message to the last.
- engine: producer -> one no-op stager (one worker) -> consumer, the producer re-yielding one
  pre-built numpy uint8 payload (bench/steps.py: Payload); events/s from the consumer's first event
  to its last (so worker start-up and end of stream are not counted).
- chain4: the same with four no-op stagers in a row (fused into one worker, the default);
  chain4_unfused: the same with ``router: {fuse: false}`` (a worker and a router hop per stager).
- eos_exit_s: RunSummary.eos_exit_s of the engine runs (last event -> run returns).

ratio = engine events/s / raw messages/s, computed per repeat and reported as the median over repeats.
The last line printed is one JSON object (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
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
# workers are fresh interpreters: they must find bench.steps too
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from flow.engine.run import RunOptions, run  # noqa: E402
from flow.graph.model import RouterOptions, step  # noqa: E402

SIZES = {"100B": 100, "7KB": 7 * 1024, "150KB": 150 * 1024, "4MB": 4 * 1024 * 1024}
COPY_THRESHOLD = 64 * 1024   # raw sender: copy=False at and above this size
RAW_TIMEOUT_MS = 30_000      # raw receiver: give up (naming the sender's exit code) after this

# events per measurement: (raw, engine, chain4); chosen so that each takes ~0.5-3 s on 2 cores
COUNTS_FULL = {"100B": (200_000, 40_000, 20_000), "7KB": (100_000, 30_000, 15_000),
               "150KB": (20_000, 6_000, 3_000), "4MB": (1_500, 400, 250)}
# quick: enough engine events for a few dozen full batches (batch_max 256), so that filling and
# draining the pipeline does not dominate the first-to-last span
COUNTS_QUICK = {"100B": (150_000, 12_000, 6_000), "7KB": (40_000, 12_000, 6_000),
                "150KB": (6_000, 800, 500), "4MB": (300, 60, 40)}


# ---------------------------------------------------------------------------------- raw PUSH/PULL
def _raw_sender(endpoint: str, size: int, n: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(endpoint)
    payload = np.zeros(size, dtype=np.uint8)
    buf = payload.data if size >= COPY_THRESHOLD else payload.tobytes()
    copy = size < COPY_THRESHOLD
    for _ in range(n):
        s.send(buf, copy=copy)
    s.close(linger=-1)
    ctx.term()


def raw_rate(size: int, n: int, tmp: str) -> float:
    """Messages/s of PUSH (another process) -> PULL (here) over ipc://, first to last message."""
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    endpoint = f"ipc://{tmp}/raw-{size}-{time.monotonic_ns()}.sock"
    pull.bind(endpoint)
    proc = mp.get_context("spawn").Process(target=_raw_sender, args=(endpoint, size, n))
    proc.start()
    copy = size < COPY_THRESHOLD
    pull.setsockopt(zmq.RCVTIMEO, RAW_TIMEOUT_MS)   # a sender that died must not hang the bench
    got = 0
    try:
        pull.recv(copy=copy)
        got = 1
        t0 = time.perf_counter()
        for _ in range(n - 1):
            pull.recv(copy=copy)
            got += 1
        t1 = time.perf_counter()
    except zmq.Again:
        proc.join(1.0)
        raise RuntimeError(f"raw PUSH/PULL ({size} B): {got} of {n} messages, then nothing for "
                           f"{RAW_TIMEOUT_MS / 1000:.0f} s (sender exit code {proc.exitcode})"
                           ) from None
    finally:
        pull.close(0)
    proc.join()
    return (n - 1) / (t1 - t0)


# ------------------------------------------------------------------------------------------ engine
def engine_graph(size: int, n: int, n_stagers: int, stamp: str, opts: RouterOptions | None = None):
    chain = step("source", "bench.steps:Payload", n=n, size=size)
    for k in range(n_stagers):
        chain = chain | step(f"noop{k}", "bench.steps:NoOp")
    chain = chain | step("sink", "bench.steps:Stamp", path=stamp)
    return chain.graph(f"bench-{n_stagers}", router=opts or RouterOptions())


def run_quiet(graph, run_dir: str, **kw):
    """`flow.engine.run.run` with quiet=True; the end-of-run summary table, which run() prints to stdout
    even when quiet (flow/engine/run.py: ``if not options.quiet or True``), is swallowed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run(graph, RunOptions(quiet=True, view=False, run_dir=run_dir, **kw))


def engine_rate(size: int, n: int, n_stagers: int, tmp: str, fuse: bool = True
                ) -> tuple[float, float, float]:
    """(events/s first->last at the consumer, eos_exit_s, start-up s) of one engine run; start-up
    is wall_s minus the consumer's first->last span minus eos_exit_s."""
    run_dir = tempfile.mkdtemp(prefix="run-", dir=tmp)
    stamp = os.path.join(run_dir, "stamp.json")
    summary = run_quiet(engine_graph(size, n, n_stagers, stamp, RouterOptions(fuse=fuse)), run_dir)
    rec = json.loads(Path(stamp).read_text())
    if rec["n"] != n or summary.exit_code != 0:
        raise RuntimeError(f"engine run lost events: consumer saw {rec['n']} of {n}, "
                           f"summary {summary.to_dict()}")
    span = rec["last"] - rec["first"]
    eos = summary.eos_exit_s or 0.0
    return (n - 1) / span, eos, summary.wall_s - span - eos


# ----------------------------------------------------------------------------------------- report
def fmt(r: float) -> str:
    return f"{r / 1000:.1f}k" if r >= 10_000 else f"{r:.0f}"


def throughput(quick: bool, repeats: int) -> dict:
    counts = COUNTS_QUICK if quick else COUNTS_FULL
    tmp = tempfile.mkdtemp(prefix="flow-bench-")
    raw: dict[str, list] = {k: [] for k in SIZES}
    eng: dict[str, list] = {k: [] for k in SIZES}
    ch4: dict[str, list] = {k: [] for k in SIZES}
    ch4u: dict[str, list] = {k: [] for k in SIZES}
    eos: list[float] = []
    startup: list[float] = []
    t_start = time.monotonic()
    for rep in range(repeats):
        for label, size in SIZES.items():
            n_raw, n_eng, n_ch = counts[label]
            r = raw_rate(size, n_raw, tmp)
            e, eos_s, st1 = engine_rate(size, n_eng, 1, tmp)
            c, eos_c, st4 = engine_rate(size, n_ch, 4, tmp)
            ch4u[label].append(engine_rate(size, n_ch, 4, tmp, fuse=False)[0])
            startup += [st1, st4]
            raw[label].append(r)
            eng[label].append(e)
            ch4[label].append(c)
            eos += [eos_s, eos_c]
            print(f"  repeat {rep + 1}/{repeats} {label:>6}: raw {fmt(r):>7} msg/s  "
                  f"engine {fmt(e):>7} ev/s  chain4 {fmt(c):>7} ev/s "
                  f"(unfused {fmt(ch4u[label][-1]):>7})  "
                  f"eos_exit {eos_s * 1e3:.0f}/{eos_c * 1e3:.0f} ms", flush=True)
    med = statistics.median
    ratio = {k: med([e / r for e, r in zip(eng[k], raw[k], strict=True)]) for k in SIZES}
    ratio4 = {k: med([c / r for c, r in zip(ch4[k], raw[k], strict=True)]) for k in SIZES}
    ratio4u = {k: med([c / r for c, r in zip(ch4u[k], raw[k], strict=True)]) for k in SIZES}
    print()
    print(f"median of {repeats} repeats ({time.monotonic() - t_start:.0f} s); transport ipc://; "
          f"ratio = engine ev/s / raw msg/s (median of per-repeat ratios)")
    head = f"{'payload':>8} {'raw msg/s':>11} {'1-stager ev/s':>14} {'ratio':>7} " \
           f"{'chain4 ev/s':>12} {'ratio':>7} {'unfused':>8} {'raw MB/s':>9} {'eng MB/s':>9}"
    print(head)
    print("-" * len(head))
    for k, size in SIZES.items():
        print(f"{k:>8} {fmt(med(raw[k])):>11} {fmt(med(eng[k])):>14} {ratio[k]:>7.3f} "
              f"{fmt(med(ch4[k])):>12} {ratio4[k]:>7.3f} {ratio4u[k]:>8.3f} "
              f"{med(raw[k]) * size / 1e6:>9.0f} "
              f"{med(eng[k]) * size / 1e6:>9.0f}")
    print(f"eos_exit_s (last event -> run returned): median {med(eos):.3f} s, "
          f"max {max(eos):.3f} s over {len(eos)} runs")
    print(f"start-up (run start -> first event at the consumer, not in ev/s): median "
          f"{med(startup[0::2]):.2f} s (3 processes), {med(startup[1::2]):.2f} s (chain4: 3 "
          f"processes, fused)")
    return {"ratio": {k: round(v, 4) for k, v in ratio.items()},
            "ratio_chain4": {k: round(v, 4) for k, v in ratio4.items()},
            "ratio_chain4_unfused": {k: round(v, 4) for k, v in ratio4u.items()},
            "eos_exit_s": round(med(eos), 4),
            "startup_s": {"1stager": round(med(startup[0::2]), 3),
                          "chain4": round(med(startup[1::2]), 3)},
            "ev_s": {k: round(med(v), 1) for k, v in eng.items()},
            "ev_s_chain4": {k: round(med(v), 1) for k, v in ch4.items()},
            "raw_ev_s": {k: round(med(v), 1) for k, v in raw.items()}}


# -------------------------------------------------------------------------------------------- RSS
def private_rss(proc) -> int:
    """RSS without shared pages (RssAnon on Linux): what a process holds for itself. The shared
    part is mostly the shared-memory segments, pooled and kept mapped on purpose (bounded by the
    pool size, ``flow.wire.shm.MAP_CACHE_BYTES`` and the run's queues), and counted in every process
    that maps them."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    info = proc.memory_info()
    return info.rss - getattr(info, "shared", 0)


def rss_mode(n: int, size: int) -> dict:
    import psutil

    tmp = tempfile.mkdtemp(prefix="flow-bench-rss-")
    stamp = os.path.join(tmp, "stamp.json")
    me = psutil.Process()
    samples: list[tuple[float, int, dict]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            workers = {}
            for c in me.children(recursive=True):
                try:
                    cmd = c.cmdline()
                    if "flow.engine.worker" in cmd:
                        workers[cmd[-1]] = private_rss(c)
                except psutil.Error:
                    pass
            samples.append((time.monotonic() - t0, private_rss(me), workers))
            stop.wait(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    summary = run_quiet(engine_graph(size, n, 1, stamp), tmp)
    stop.set()
    th.join()
    rec = json.loads(Path(stamp).read_text())
    mb = 1 / (1 << 20)
    print(f"RSS over a {n}-event run ({size} B numpy payload, producer -> noop -> consumer), "
          f"sampled every 0.5 s: {len(samples)} samples, wall {summary.wall_s:.1f} s, "
          f"{(n - 1) / (rec['last'] - rec['first']):.0f} ev/s")
    # start = first sample once every worker is up; steady figures ignore the first 20 %
    names = sorted({k for _, _, w in samples for k in w})
    full = [s for s in samples if len(s[2]) == len(names)] or samples
    series = {"router": [(t, r) for t, r, _ in samples]}
    for name in names:
        series[name] = [(t, w[name]) for t, _, w in full if name in w]
    out = {}
    print("private RSS (RssAnon: without the shared-memory segments, pooled and mapped on purpose)")
    print(f"{'process':>10} {'start MB':>9} {'peak MB':>8} {'end MB':>7} {'growth after 20%':>17}")
    for name, pts in series.items():
        vals = [v for _, v in pts]
        cut = vals[len(vals) // 5:] or vals
        growth = (cut[-1] - cut[0]) * mb
        out[name] = {"start_mb": round(vals[0] * mb, 1), "peak_mb": round(max(vals) * mb, 1),
                     "end_mb": round(vals[-1] * mb, 1), "growth_after_20pct_mb": round(growth, 1)}
        print(f"{name:>10} {vals[0] * mb:>9.1f} {max(vals) * mb:>8.1f} {vals[-1] * mb:>7.1f} "
              f"{growth:>+17.1f}")
    print("series (MB, every ~10 % of the run):")
    step_ = max(1, len(samples) // 10)
    for t, r, w in samples[::step_] + [samples[-1]]:
        print(f"  t={t:5.1f}s router {r * mb:6.1f} " + " ".join(f"{k} {v * mb:6.1f}"
                                                            for k, v in sorted(w.items())))
    flat = {k: abs(v["growth_after_20pct_mb"]) < 10 for k, v in out.items()}
    print(f"flat (|growth after the first 20 % of samples| < 10 MB): {flat}")
    if not flat.get("sink", True):
        print("  the consumer grows with the number of events: its duplicate filter "
              "(flow/engine/worker.py Worker.seen, a set of (key, path)) is never pruned")
    return {"rss": out, "rss_flat": flat, "events": n, "consumed": rec["n"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller counts, 3 repeats (< 2 min)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3 quick, 5 full)")
    p.add_argument("--rss", action="store_true", help="RSS of router and workers over a long run")
    p.add_argument("--events", type=int, default=100_000, help="events of the --rss run")
    p.add_argument("--size", type=int, default=7 * 1024, help="payload bytes of the --rss run")
    a = p.parse_args(argv)
    os.chdir(ROOT)
    if a.rss:
        result = rss_mode(a.events, a.size)
    else:
        result = throughput(a.quick, a.repeats or (3 if a.quick else 5))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
