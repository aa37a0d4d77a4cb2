"""What a physicist compares: `flow run` against `flow run --inline`, on the demo and the real DL2 graph.

    python bench/efficiency.py [--quick] [--repeats N]

Each run is the command line a user types (``python -m flow.cli run FILE [--inline]`` in its own
process), interleaved per repeat so that machine noise hits every variant alike:

- demo: configs/demo.yaml (toy showers rendered by the source, nine steps), ``--events`` events;
- simtel_dl2: configs/simtel_dl2.yaml on the SST-1M file, its split reader (`SimtelFrames` ->
  `SimtelParser`, fused with the stagers after it) read ``passes`` times by
  `bench.realdata.RepeatedSimtelFrames` (keys prefixed by the pass) to reach >= 500 events;
- simtel_dl2_whole: the same with the reader unsplit (one `SimtelSource` producer,
  `bench.realdata.RepeatedSimtel`), ``inline`` and ``fused`` only;

each as ``--inline`` (one process), as ``flow run`` with ``router: {fuse: false}`` (a worker per
step, as before fusion) and as ``flow run`` (fused, the default). Workers start from the warm
template in both engine variants; ``spawn_unfused`` (``start_method: spawn``, no fusion: the
engine as it was) is run as a reference.

Reported per graph and variant (medians over repeats): wall seconds and CPU seconds (this
process's reaped children: the command, its workers and their template), and the ratios
``inline wall / variant wall`` (> 1: the engine is faster than one process) and ``variant CPU /
inline CPU``. ``startup_s``: wall seconds of a one-event run (interpreter, imports, workers,
setup, one event through, end of stream), per variant; ``steady_vs_inline``: the wall ratio with
each run's start-up taken off (per repeat, then the median). ``marginal_vs_inline``: the steady
state without what the first events cost once: ``inline`` and ``fused`` also run ``--long``
(3) times the events, and each variant's seconds per event between its two runs of a repeat
(``marginal_ms``) are compared, inline ÷ fused, median over repeats. The wall ratio minus
start-up still holds the once-per-run costs a one-event run does not have: a 527-event SST-1M
run makes the writer create 334 tables (30 k HDF5 attributes, 1.6 s, serial in both), a
one-event run only those of that event's telescopes.
``reader_serial_ms``: the cost per event of the split reader's serial part (`SimtelFrames`:
reading, decompressing and framing the SST-1M file's raw objects, no parsing), beside `SimtelSource`'s whole cost (``reader.serial_share`` is their
ratio), `SimtelParser`'s (the part the workers share) and a profile of `SimtelSource`.
``split_vs_whole_reader``: simtel_dl2_whole wall / simtel_dl2 wall per variant. Last line, one JSON object:
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

# the repeating source for each reader (simtel_dl2 splits it: SimtelFrames -> SimtelParser)
REPEATED = {"stages.io.simtel:SimtelSource": "bench.realdata:RepeatedSimtel",
            "stages.io.simtel_frames:SimtelFrames": "bench.realdata:RepeatedSimtelFrames"}

SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
WHOLE_VARIANTS = ("inline", "fused")  # simtel_dl2_whole: the graph with the reader unsplit
LONG_VARIANTS = ("inline", "fused")   # also run at `--long` times the events (marginal cost)
VARIANTS = {"inline": ({}, True), "unfused": ({"fuse": False}, False), "fused": ({}, False),
            "spawn_unfused": ({"fuse": False, "start_method": "spawn"}, False)}


def pipeline(graph: str, out: Path, events: int, router: dict) -> Path:
    """The YAML of one variant: the shipped config, its output in ``out``, ``router`` options."""
    config = "simtel_dl2" if graph.startswith("simtel_dl2") else graph
    spec = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())
    steps = {s["name"]: s for s in spec["steps"]}
    steps["write"]["with"]["path"] = str(out / "out.h5")
    if graph == "demo":
        steps["read"]["with"]["n_events"] = events
    else:   # the SST-1M file, read as often as needed for `events`
        if graph == "simtel_dl2_whole":   # the reader before the split: one SimtelSource
            parse = steps.pop("parse")
            spec["steps"].remove(parse)
            steps["read"].update(use="stages.io.simtel:SimtelSource", to=parse["to"])
        steps["read"]["use"] = REPEATED[steps["read"]["use"]]
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
    """ms per event of (a) `SimtelFrames` (the serial part of the split reader: read, decompress,
    frame the raw objects of each array event, behind its reader thread), (b) `SimtelSource` (the
    whole reader: a + parsing + R1 conversion), (c) `SimtelParser` on (a)'s events (the part the
    workers share), (d) eventio's `EventIOFile` alone (no parsing) and eventio's `SimTelFile`; and a
    cProfile of (b) grouped into decompression, framing and parsing. Contexts are built before."""
    import warnings

    from eventio import EventIOFile, SimTelFile

    from flow.graph.step import instantiate
    from stages.io.simtel import SimtelSource
    from stages.io.simtel_frames import SimtelFrames
    from stages.io.simtel_parser import SimtelParser
    warnings.filterwarnings("ignore")

    def raw() -> None:
        with EventIOFile(path) as f:
            for obj in f:
                obj.read()

    def parsed() -> list:
        with SimTelFile(path, skip_calibration=True) as f:
            return list(f)

    src = instantiate(SimtelSource, "producer", "read", {"path": path})
    src.publish_context()
    frames = instantiate(SimtelFrames, "producer", "read", {"path": path})
    parser = instantiate(SimtelParser, "stager", "parse", {}, frames.publish_context())
    parser.setup()
    framed = [k.event for k in frames.process()]

    def source() -> None:
        for _ in src.process():
            pass

    def frame() -> None:
        for _ in frames.process():
            pass

    def parse() -> None:
        for event in framed:
            parser.process(event)

    n = len(framed)
    best = {}
    for name, fn in (("frames", frame), ("source", source), ("parser", parse), ("raw", raw),
                     ("simtelfile", parsed)):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = 1e3 * statistics.median(times) / n
    profile = cProfile.Profile()
    profile.enable()
    source()
    profile.disable()
    groups = dict.fromkeys([name for name, _ in PROFILE_GROUPS], 0.0)
    for (file, _, func), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():
        name = next(g for g, match in PROFILE_GROUPS if match(file, func))
        groups[name] += tottime
    total = sum(groups.values()) or 1.0
    return {"events": n, "frames_ms": best["frames"], "source_ms": best["source"],
            "parser_ms": best["parser"], "raw_ms": best["raw"],
            "simtelfile_ms": best["simtelfile"],
            "serial_share": best["frames"] / best["source"],
            "source_profile_share": {k: round(v / total, 3) for k, v in groups.items()}}


def med(xs) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events, 2 repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--demo-events", type=int, default=None)
    p.add_argument("--simtel-events", type=int, default=500)
    p.add_argument("--long", type=float, default=None,
                   help="the long runs' events, times each graph's (default 3, --quick 2)")
    p.add_argument("--graphs", nargs="+", default=["demo", "simtel_dl2", "simtel_dl2_whole"],
                   choices=["demo", "simtel_dl2", "simtel_dl2_whole"], help="graphs to run")
    a = p.parse_args(argv)
    from stages.datasets import resolve_path
    sst = str(resolve_path(f"dataset:{SST1M}"))
    repeats = a.repeats or (2 if a.quick else 3)
    events = {"demo": a.demo_events or (1500 if a.quick else 3000), "simtel_dl2": a.simtel_events,
              "simtel_dl2_whole": a.simtel_events}
    variants = {"demo": tuple(VARIANTS), "simtel_dl2": tuple(VARIANTS),
                "simtel_dl2_whole": WHOLE_VARIANTS}
    graphs = tuple(g for g in variants if g in a.graphs)
    long_factor = a.long or (2 if a.quick else 3)
    long_events = {g: int(round(long_factor * events[g])) for g in graphs}
    runs: dict = {(g, v): [] for g in graphs for v in variants[g]}
    longs: dict = {(g, v): [] for g in graphs for v in LONG_VARIANTS}
    starts: dict = {(g, v): [] for g in graphs for v in variants[g]}
    # warm-up: numba caches and the file in the page cache (not counted)
    for g in graphs:
        run_variant(g, "inline", 1)
    for r in range(repeats):
        for g in graphs:
            for v in variants[g]:
                starts[(g, v)].append(run_variant(g, v, 1)["wall_s"])
                res = run_variant(g, v, events[g])
                runs[(g, v)].append(res)
                if v in LONG_VARIANTS:
                    longs[(g, v)].append(run_variant(g, v, long_events[g]))
                print(f"repeat {r + 1}/{repeats} {g:<16} {v:<14} wall {res['wall_s']:7.2f} s  "
                      f"cpu {res['cpu_s']:7.2f} s  start-up {starts[(g, v)][-1]:5.2f} s",
                      flush=True)
    reader = reader_costs(sst)
    wall = {k: med([x["wall_s"] for x in v]) for k, v in runs.items()}
    cpu = {k: med([x["cpu_s"] for x in v]) for k, v in runs.items()}

    def marginal(g: str, v: str) -> list:
        """Seconds per event between the run and the long run of each repeat."""
        return [(x["wall_s"] - s["wall_s"]) / max(1, x["events"] - s["events"])
                for s, x in zip(runs[(g, v)], longs[(g, v)], strict=True)]

    def marginal_ratio(g: str, v: str) -> float:
        """inline / variant seconds per event between the two run lengths, per repeat."""
        return med([i / max(1e-9, x) for i, x in zip(marginal(g, "inline"), marginal(g, v),
                                                     strict=True)])

    def ratio(g: str, v: str, steady: bool = False) -> float:
        """inline wall / variant wall per repeat, then the median; ``steady``: each run's start-up
        (its one-event run) taken off first."""
        def span(run: dict, start: float) -> float:
            return max(1e-9, run["wall_s"] - (start if steady else 0.0))
        return med([span(i, si) / span(x, sx) for i, x, si, sx in zip(
            runs[(g, "inline")], runs[(g, v)], starts[(g, "inline")], starts[(g, v)],
            strict=True)])

    print(f"\n{'graph':<16} {'variant':<14} {'events':>7} {'wall s':>8} {'cpu s':>8} "
          f"{'inline/wall':>11} {'steady':>7} {'cpu/inline':>10} {'start-up s':>10}")
    for g in graphs:
        for v in variants[g]:
            print(f"{g:<16} {v:<14} {runs[(g, v)][0]['events']:>7} {wall[(g, v)]:>8.2f} "
                  f"{cpu[(g, v)]:>8.2f} {ratio(g, v):>11.2f} {ratio(g, v, steady=True):>7.2f} "
                  f"{cpu[(g, v)] / cpu[(g, 'inline')]:>10.2f} {med(starts[(g, v)]):>10.2f}")
    for g in graphs:
        print(f"{g}: {long_events[g]} against {events[g]} events, ms per event in between: "
              + ", ".join(f"{v} {1e3 * med(marginal(g, v)):.2f}" for v in LONG_VARIANTS)
              + f"; inline / fused {marginal_ratio(g, 'fused'):.2f}")
    print(f"\nThe SST-1M file ({reader['events']} events), ms per event: SimtelFrames (serial: "
          f"read, decompress, frame) {reader['frames_ms']:.2f} = {reader['serial_share']:.1%} of "
          f"SimtelSource {reader['source_ms']:.2f} · SimtelParser (in the workers) "
          f"{reader['parser_ms']:.2f} · eventio EventIOFile alone {reader['raw_ms']:.2f} · "
          f"eventio SimTelFile {reader['simtelfile_ms']:.2f}; cProfile of SimtelSource, share "
          f"of its time: {reader['source_profile_share']}")
    result = {
        "vs_inline": {g: round(ratio(g, "fused"), 3) for g in graphs},
        "steady_vs_inline": {g: round(ratio(g, "fused", steady=True), 3) for g in graphs},
        "marginal_vs_inline": {g: round(marginal_ratio(g, "fused"), 3) for g in graphs},
        "marginal_ms": {g: {v: round(1e3 * med(marginal(g, v)), 3) for v in LONG_VARIANTS}
                        for g in graphs},
        "long_events": long_events,
        "unfused_vs_inline": {g: round(ratio(g, "unfused"), 3) for g in graphs
                              if "unfused" in variants[g]},
        "spawn_unfused_vs_inline": {g: round(ratio(g, "spawn_unfused"), 3) for g in graphs
                                    if "spawn_unfused" in variants[g]},
        "cpu_vs_inline": {g: {v: round(cpu[(g, v)] / cpu[(g, "inline")], 3)
                              for v in variants[g] if v != "inline"} for g in graphs},
        "startup_s": {g: {v: round(med(starts[(g, v)]), 3) for v in variants[g]}
                      for g in graphs},
        "events": events,
        "reader": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in reader.items()},
        "reader_serial_ms": round(reader["frames_ms"], 3),
        "split_vs_whole_reader": {v: round(med([s["wall_s"] / x["wall_s"] for s, x in zip(
            runs[("simtel_dl2_whole", v)], runs[("simtel_dl2", v)], strict=True)]), 3)
            for v in WHOLE_VARIANTS} if {"simtel_dl2", "simtel_dl2_whole"} <= set(graphs) else {},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
