"""One sim_telarray file read into R1 events: the whole reader against the split one, on this machine.

    python bench/simtel_reader.py [--quick] [--repeats N] [--events N]

The SST-1M file (31 events) is read ``passes`` times to reach ``--events`` events, keys prefixed by
the pass (`bench.realdata.RepeatedSimtel`, `RepeatedSimtelFrames`), into a consumer that only counts
(`bench.steps.Stamp`). Each run is ``python -m flow.cli run`` in its own process, interleaved per
repeat so that machine noise hits every variant alike:

- ``whole``: `SimtelSource` (read, decompress, frame and parse in the one producer) -> count;
- ``split_w1``, ``split_w2``: `SimtelFrames` (read, decompress, frame) -> `SimtelParser` with 1 or 2
  workers -> count;
- ``whole_inline``, ``split_inline``: the same graphs ``--inline`` (one process, one core).

events/s = events / (last - first event at the consumer): start-up and end of stream excluded.
``ratio_split_vs_whole`` = split_w2 events/s ÷ whole events/s per repeat, median over repeats (the
input scaling with cores); ``serial_share`` = SimtelFrames' ms per event ÷ SimtelSource's, both
timed in this process on the file (`bench.efficiency.reader_costs`). Last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
from flow.engine.memory import default_numba_cache  # noqa: E402

default_numba_cache()   # the kernels `make venv` compiled (before numba loads)

import yaml  # noqa: E402

SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
VARIANTS = {"whole": ("whole", None, False), "split_w1": ("split", 1, False),
            "split_w2": ("split", 2, False), "whole_inline": ("whole", None, True),
            "split_inline": ("split", 1, True)}


def pipeline(kind: str, out: Path, passes: int) -> Path:
    """read (-> parse) -> count, as YAML in ``out``."""
    read = {"name": "read", "kind": "producer",
            "use": "bench.realdata:" + ("RepeatedSimtel" if kind == "whole"
                                        else "RepeatedSimtelFrames"),
            "with": {"path": f"dataset:{SST1M}", "passes": passes}, "to": ["count"]}
    steps = [read]
    if kind == "split":
        read["to"] = ["parse"]
        steps.append({"name": "parse", "kind": "stager",
                      "use": "stages.io.simtel_parser:SimtelParser", "to": ["count"]})
    steps.append({"name": "count", "kind": "consumer", "use": "bench.steps:Stamp",
                  "with": {"path": str(out / "stamp.json")}})
    spec = {"name": f"simtel-reader-{kind}", "steps": steps,
            "router": {"queue_limit": 500, "dead_letter": str(out / "dl.jsonl")}}
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_variant(variant: str, passes: int) -> dict:
    kind, workers, inline = VARIANTS[variant]
    with tempfile.TemporaryDirectory(prefix=f"reader-{variant}-") as tmp:
        cfg = pipeline(kind, Path(tmp), passes)
        cmd = [sys.executable, "-m", "flow.cli", "run", str(cfg), "--quiet", "--no-scale"]
        cmd += ["--inline"] if inline else []
        cmd += ["--workers", f"parse={workers}"] if workers and not inline else []
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} failed:\n{proc.stderr[-3000:]}")
        stamp = json.loads((Path(tmp) / "stamp.json").read_text())
    return {"n": stamp["n"], "ev_s": (stamp["n"] - 1) / max(stamp["last"] - stamp["first"], 1e-9)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events, 2 repeats")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--events", type=int, default=None)
    a = p.parse_args(argv)
    repeats = a.repeats or (2 if a.quick else 3)
    passes = max(1, -(-(a.events or (500 if a.quick else 1000)) // 31))
    run_variant("whole_inline", 1)   # warm-up: the file in the page cache (not counted)
    runs: dict = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for v in VARIANTS:
            res = run_variant(v, passes)
            runs[v].append(res)
            print(f"repeat {r + 1}/{repeats} {v:<13} {res['n']:>6} events {res['ev_s']:8.1f} ev/s",
                  flush=True)
    from bench.efficiency import reader_costs
    from stages.datasets import resolve_path
    reader = reader_costs(str(resolve_path(f"dataset:{SST1M}")))
    ev_s = {v: statistics.median(x["ev_s"] for x in xs) for v, xs in runs.items()}
    ratio = statistics.median(s["ev_s"] / w["ev_s"]
                              for s, w in zip(runs["split_w2"], runs["whole"], strict=True))
    print(f"\n{'variant':<13} {'ev/s (median)':>14}")
    for v in VARIANTS:
        print(f"{v:<13} {ev_s[v]:>14.1f}")
    print(f"\nsplit_w2 / whole: {ratio:.2f}; serial part {reader['frames_ms']:.2f} ms/event = "
          f"{reader['serial_share']:.1%} of SimtelSource's {reader['source_ms']:.2f} ms/event")
    print(json.dumps({"ev_s": {v: round(x, 1) for v, x in ev_s.items()},
                      "ratio_split_vs_whole": round(ratio, 3),
                      "ratio_split_w1_vs_whole": round(statistics.median(
                          s["ev_s"] / w["ev_s"] for s, w in zip(runs["split_w1"], runs["whole"],
                                                                strict=True)), 3),
                      "reader_serial_ms": round(reader["frames_ms"], 3),
                      "source_ms": round(reader["source_ms"], 3),
                      "serial_share": round(reader["serial_share"], 3),
                      "events": runs["whole"][0]["n"], "repeats": repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
