"""What a physicist compares: `flow run` against `flow run --inline`, on the demo and the real DL2 graph.

    python bench/efficiency.py [--quick] [--repeats N]

Each run is the command line a user types (``python -m flow.cli run FILE [--inline]`` in its own
process), interleaved per repeat so that machine noise hits every variant alike:

- demo: configs/demo.yaml (toy showers rendered by the source, nine steps), ``--events`` events;
- simtel_dl2: configs/simtel_dl2.yaml on the SST-1M file, read ``passes`` times by
  `bench.realdata.RepeatedSimtel` (keys prefixed by the pass) to reach >= 500 events;

each as ``--inline`` (one process), as ``flow run`` with ``router: {fuse: false}`` (a worker per
step, as before fusion) and as ``flow run`` (fused, the default). Workers start from the warm
template in both engine variants; ``spawn_unfused`` (``start_method: spawn``, no fusion: the
engine as it was) is run as a reference.

Reported per graph and variant (medians over repeats): wall seconds and CPU seconds (this
process's reaped children: the command, its workers and their template), and the ratios
``inline wall / variant wall`` (> 1: the engine is faster than one process) and ``variant CPU /
inline CPU``. ``startup_s``: wall seconds of a one-event run (interpreter, imports, workers,
setup, one event through, end of stream), per variant. ``reader_serial_ms``: the cost per event of
reading, decompressing and framing the SST-1M file's raw objects (eventio's ``EventIOFile``, no
parsing), the part that must stay serial once parsing moves into the workers; the profile of
``SimtelSource`` beside it says where its whole per-event cost goes. Last line, one JSON object:
``{"vs_inline": {"demo": r, "simtel_dl2": r}, "unfused_vs_inline": {...}, "startup_s": {...},
"reader_serial_ms": x, ...}``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the repository root first (bench/ itself holds a stages.py that would shadow the package)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
os.environ["PYTHONPATH"] = os.pathsep.join(  # the commands and their workers find bench.realdata
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
from flow.engine.memory import default_numba_cache  # noqa: E402

default_numba_cache()   # the kernels `make venv` compiled (before numba loads)

import yaml  # noqa: E402

SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
VARIANTS = {"inline": ({}, True), "unfused": ({"fuse": False}, False), "fused": ({}, False),
            "spawn_unfused": ({"fuse": False, "start_method": "spawn"}, False)}


def pipeline(graph: str, out: Path, events: int, router: dict) -> Path:
    """The YAML of one variant: the shipped config, its output in ``out``, ``router`` options."""
    spec = yaml.safe_load((ROOT / "configs" / f"{graph}.yaml").read_text())
    steps = {s["name"]: s for s in spec["steps"]}
    steps["write"]["with"]["path"] = str(out / "out.h5")
    if graph == "demo":
        steps["read"]["with"]["n_events"] = events
    else:   # the SST-1M file, read as often as needed for `events`
        steps["read"]["use"] = "bench.realdata:RepeatedSimtel"
        passes = max(1, -(-events // 31))
        steps["read"]["with"].update(path=f"dataset:{SST1M}", passes=passes,
                                     max_events=1 if events == 1 else 0)
    spec["router"] = {**spec.get("router", {}), **router,
                      "dead_letter": str(out / "dl.jsonl")}
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_variant(graph: str, variant: str, events: int) -> dict:
    """Wall and CPU seconds of one ``flow run`` command line."""
    router, inline = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix=f"eff-{graph}-") as tmp:
        cfg = pipeline(graph, Path(tmp), events, router)
        cmd = [sys.executable, "-m", "flow.cli", "run", str(cfg), "--quiet",
               "--summary-json", f"{tmp}/summary.json"] + (["--inline"] if inline else [])
        cpu0, t0 = children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        if proc.returncode != 0:
            raise RuntimeError(f"{graph}/{variant} failed:\n{proc.stderr[-3000:]}")
        summary = json.loads(Path(f"{tmp}/summary.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "events": summary.get("produced")}


# ------------------------------------------------------------------------------ the reader
PROFILE_GROUPS = (  # (name, predicate on (file, function)) in order; the first that matches
    ("decompress", lambda f, fn: "zstandard" in fn or "zstandard" in f or "gzip" in f
     or "zlib" in f or "zlib" in fn or "_compression" in f),
    ("framing", lambda f, fn: "eventio/base.py" in f or "eventio/header" in f),
    ("parsing", lambda f, fn: "eventio/" in f or "numpy" in fn or "_struct" in fn
     or "numpy" in f),
    ("other", lambda f, fn: True),
)


def reader_costs(path: str) -> dict:
    """ms per event of (a) reading, decompressing and framing the raw objects (EventIOFile, no
    parsing), (b) eventio's SimTelFile (a + parsing into arrays), (c) SimtelSource's conversion
    (R1 calibration into the event schema) of already parsed events; and a cProfile of (b)
    grouped into decompression, framing and parsing."""
    import warnings

    from eventio import EventIOFile, SimTelFile

    from flow.graph.step import instantiate
    from stages.io.simtel import SimtelSource
    warnings.filterwarnings("ignore")

    def raw() -> None:
        with EventIOFile(path) as f:
            for obj in f:
                obj.read()

    def parsed() -> list:
        with SimTelFile(path, skip_calibration=True) as f:
            return list(f)

    events = parsed()
    src = instantiate(SimtelSource, "producer", "read", {"path": path})
    src.publish_context()
    gen = src.process()
    next(gen)        # sets up the source's run record (what _convert reads)
    gen.close()

    def convert() -> None:
        for i, item in enumerate(events):
            src._convert(item, int(item.get("event_id", 0)) or -1 - i)

    n = len(events)
    best = {}
    for name, fn in (("raw", raw), ("simtelfile", parsed), ("convert", convert)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = 1e3 * statistics.median(times) / n
    profile = cProfile.Profile()
    profile.enable()
    parsed()
    profile.disable()
    groups = dict.fromkeys([name for name, _ in PROFILE_GROUPS], 0.0)
    for (file, _, func), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():
        name = next(g for g, match in PROFILE_GROUPS if match(file, func))
        groups[name] += tottime
    total = sum(groups.values()) or 1.0
    return {"events": n, "raw_ms": best["raw"], "simtelfile_ms": best["simtelfile"],
            "convert_ms": best["convert"],
            "simtelfile_profile_share": {k: round(v / total, 3) for k, v in groups.items()}}


def med(xs) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events, 2 repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--demo-events", type=int, default=None)
    p.add_argument("--simtel-events", type=int, default=500)
    a = p.parse_args(argv)
    from stages.datasets import resolve_path
    sst = str(resolve_path(f"dataset:{SST1M}"))
    repeats = a.repeats or (2 if a.quick else 3)
    events = {"demo": a.demo_events or (1500 if a.quick else 3000), "simtel_dl2": a.simtel_events}
    graphs = ("demo", "simtel_dl2")
    runs: dict = {(g, v): [] for g in graphs for v in VARIANTS}
    starts: dict = {(g, v): [] for g in graphs for v in VARIANTS}
    # warm-up: numba caches and the file in the page cache (not counted)
    for g in graphs:
        run_variant(g, "inline", 1)
    for r in range(repeats):
        for g in graphs:
            for v in VARIANTS:
                starts[(g, v)].append(run_variant(g, v, 1)["wall_s"])
                res = run_variant(g, v, events[g])
                runs[(g, v)].append(res)
                print(f"repeat {r + 1}/{repeats} {g:<11} {v:<14} wall {res['wall_s']:7.2f} s  "
                      f"cpu {res['cpu_s']:7.2f} s  start-up {starts[(g, v)][-1]:5.2f} s",
                      flush=True)
    reader = reader_costs(sst)
    wall = {k: med([x["wall_s"] for x in v]) for k, v in runs.items()}
    cpu = {k: med([x["cpu_s"] for x in v]) for k, v in runs.items()}

    def ratio(g: str, v: str) -> float:   # per repeat, then the median
        return med([i["wall_s"] / x["wall_s"] for i, x in zip(runs[(g, "inline")], runs[(g, v)],
                                                              strict=True)])

    print(f"\n{'graph':<11} {'variant':<14} {'events':>7} {'wall s':>8} {'cpu s':>8} "
          f"{'inline/wall':>11} {'cpu/inline':>10} {'start-up s':>10}")
    for g in graphs:
        for v in VARIANTS:
            print(f"{g:<11} {v:<14} {runs[(g, v)][0]['events']:>7} {wall[(g, v)]:>8.2f} "
                  f"{cpu[(g, v)]:>8.2f} {ratio(g, v):>11.2f} "
                  f"{cpu[(g, v)] / cpu[(g, 'inline')]:>10.2f} {med(starts[(g, v)]):>10.2f}")
    print(f"\nSimtelSource on the SST-1M file ({reader['events']} events), ms per event: "
          f"raw objects read+decompressed+framed {reader['raw_ms']:.2f} · eventio SimTelFile "
          f"(that + parsing) {reader['simtelfile_ms']:.2f} · SimtelSource's conversion of "
          f"parsed events {reader['convert_ms']:.2f}; cProfile of SimTelFile, share of its "
          f"time: {reader['simtelfile_profile_share']}")
    result = {
        "vs_inline": {g: round(ratio(g, "fused"), 3) for g in graphs},
        "unfused_vs_inline": {g: round(ratio(g, "unfused"), 3) for g in graphs},
        "spawn_unfused_vs_inline": {g: round(ratio(g, "spawn_unfused"), 3) for g in graphs},
        "cpu_vs_inline": {g: {v: round(cpu[(g, v)] / cpu[(g, "inline")], 3)
                              for v in VARIANTS if v != "inline"} for g in graphs},
        "startup_s": {g: {v: round(med(starts[(g, v)]), 3) for v in VARIANTS} for g in graphs},
        "events": events,
        "reader": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in reader.items()},
        "reader_serial_ms": round(reader["raw_ms"], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
