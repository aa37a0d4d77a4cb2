"""The DL2 pipeline on real sim_telarray files: the engine with N workers vs a plain ctapipe loop.

    python bench/realdata.py [--quick] [--workers N] [--file NAME]

Both run in this run, on the same events, interleaved per repeat so that machine noise hits both:

- engine: configs/simtel_dl2.yaml's steps (calibrate, clean, parameters, quality, reconstruct,
  write) through the router, the source re-reading the file ``passes`` times (`RepeatedSimtel`,
  keys prefixed by the pass) to reach the event count, ``calibrate`` with N workers (the
  heaviest step), the other stagers at the file's minimum unless ``--autoscale``; ``--readers R``
  splits the passes over R producer steps (the source is serial: eventio parsing is ~75 % of
  ctapipe's per-event time on gamma_test, where R = 2 pays; on the SST-1M file it does not);
- ctapipe: one process, ``SimTelEventSource`` + ``CameraCalibrator`` + ``ImageProcessor`` +
  ``ShowerProcessor`` with the same settings (equivalent focal length, NeighborPeakWindowSum,
  tailcuts 10/5 with 2 picture neighbours, HillasReconstructor), the file read the same number of
  times, no output file.

events/s = events / (time the last event is finished - time the source yields the first one): the
engine's source and DL2 writer stamp them (`RepeatedSimtel`, `TimedDL2Writer`), so interpreter and
worker set-up before the first event count for neither, but a downstream worker still starting when
events flow does count against the engine (measuring at the writer alone would not: the router
queues up to ``queue_limit`` events meanwhile, which then drain at the writer's pace). The wall
time of each run, start-up included, is printed too. ratio = engine events/s / ctapipe events/s
per repeat; the median over repeats is reported. The last line printed is one JSON object:
``{"events_per_s_ratio_vs_ctapipe_loop": r, "workers": N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(  # workers are fresh interpreters: find bench.realdata
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
from flow.engine.memory import default_numba_cache  # noqa: E402

default_numba_cache()   # the kernels `make venv` compiled (before numba loads)
warnings.filterwarnings("ignore")

import yaml  # noqa: E402

from flow.graph.params import Param  # noqa: E402
from flow.graph.step import Keyed  # noqa: E402
from stages.io.hdf5 import DL2Writer  # noqa: E402
from stages.io.simtel import SimtelSource  # noqa: E402
from stages.io.simtel_frames import SimtelFrames  # noqa: E402

CONFIG = ROOT / "configs" / "simtel_dl2.yaml"
FILES = {"sst1m": "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst",
         "gamma_test": "gamma_test.simtel.gz"}


class Repeated:
    """Reads the file ``passes`` times; keys ``"{pass}:{obs_id}:{event_id}"`` (a mixin of the two
    readers below)."""

    passes = Param(int, 1, "how many times the file is read")
    first_pass = Param(int, 0, "number of the first pass (keys stay unique across sources)")
    stamp = Param(str, "", "file receiving the time.time() of the first event out")

    def process(self) -> Iterator[Keyed]:
        for n in range(self.first_pass, self.first_pass + self.passes):
            for item in super().process():
                if self.stamp:
                    Path(self.stamp).write_text(json.dumps(time.time()))
                    self.stamp = ""
                yield Keyed(f"{n}:{item.key}", item.event)


class RepeatedSimtel(Repeated, SimtelSource):
    """`SimtelSource` reading its file ``passes`` times (see `Repeated`)."""

    def setup(self) -> None:
        # SimtelSource.process() builds its context first (3 s for gamma_test's 100+ telescopes):
        # in a worker that is one silent generator step, and with the file's first read the
        # router declares the producer dead (flow/engine/worker.py run_producer heartbeats only between
        # batches). The router already sent the context: use it.
        if "subarray" in (self.context or {}):
            self._context = dict(self.context)


class RepeatedSimtelFrames(Repeated, SimtelFrames):
    """`SimtelFrames` reading its file ``passes`` times (see `Repeated`): the split reader of
    configs/simtel_dl2.yaml, as `RepeatedSimtel` is the whole one."""


class TimedDL2Writer(DL2Writer):
    """`DL2Writer` that also writes ``{"n", "first", "last"}`` (time.time() of events) to `stamp`."""

    stamp = Param(str, "", "JSON file written at teardown")

    def setup(self) -> None:
        super().setup()
        self._n, self._first, self._last = 0, 0.0, 0.0

    def process(self, event: dict) -> None:
        super().process(event)
        self._last = time.time()
        self._first = self._first or self._last
        self._n += 1

    def teardown(self) -> None:
        super().teardown()
        if self.stamp:
            Path(self.stamp).write_text(json.dumps({"n": self._n, "first": self._first,
                                                    "last": self._last}))


#: the repeating source standing in for each reader a config may use
REPEATED = {"stages.io.simtel:SimtelSource": "bench.realdata:RepeatedSimtel",
            "stages.io.simtel_frames:SimtelFrames": "bench.realdata:RepeatedSimtelFrames"}


def engine_graph(path: str, passes: int, workers: int, autoscale: bool, out_dir: Path,
                 readers: int = 1):
    """configs/simtel_dl2.yaml with the repeating source (split over ``readers`` producer steps),
    timed writer and N calibrate workers."""
    from flow.graph.loader import graph_from_text

    spec = yaml.safe_load(CONFIG.read_text())
    steps = {s["name"]: s for s in spec["steps"]}
    read = steps["read"]
    read["use"] = REPEATED[read["use"]]
    spec["steps"].remove(read)
    shares = [passes // readers + (i < passes % readers) for i in range(readers)]
    for i, share in enumerate(shares):
        name = "read" if i == 0 else f"read{i + 1}"
        with_ = {**read["with"], "path": path, "passes": share, "first_pass": sum(shares[:i]),
                 "stamp": str(out_dir / f"first_{name}.json")}
        spec["steps"].insert(i, {**read, "name": name, "with": with_})
    steps["write"]["use"] = "bench.realdata:TimedDL2Writer"
    steps["write"]["with"].update(path=str(out_dir / "dl2.h5"), stamp=str(out_dir / "stamp.json"))
    fixed = {"calibrate": workers}
    if not autoscale:
        fixed.update({s["name"]: s.get("workers", {}).get("min", 1) for s in spec["steps"]
                      if s["kind"] == "stager" and s["name"] != "calibrate"})
    return graph_from_text(yaml.safe_dump(spec), str(CONFIG), workers=fixed)


def run_engine(path: str, passes: int, workers: int, autoscale: bool, readers: int = 1) -> dict:
    from flow.engine.run import RunOptions, run

    with tempfile.TemporaryDirectory(prefix="realdata-") as tmp:
        out = Path(tmp)
        graph = engine_graph(path, passes, workers, autoscale, out, readers)
        start, start_wall, cpu = time.perf_counter(), time.time(), _cpu()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run(graph, RunOptions(quiet=True, inline=False, print_summary=False,
                                            run_dir=str(out / "run"),
                                            stats_jsonl=str(out / "stats.jsonl")))
        wall, cpu = time.perf_counter() - start, [b - a for a, b in zip(cpu, _cpu(), strict=True)]
        stamp = json.loads((out / "stamp.json").read_text())
        first_out = min(json.loads(f.read_text()) for f in out.glob("first_*.json"))
        steps = _last_stats(out / "stats.jsonl")
    if summary.exit_code != 0:
        raise RuntimeError(f"engine run failed ({summary.state}): {summary.failures}")
    return {"n": stamp["n"], "rate": stamp["n"] / (stamp["last"] - first_out),
            "wall_s": wall, "workers_started": summary.workers_started,
            "first_event_s": first_out - start_wall, "fill_s": stamp["first"] - first_out,
            "router_cpu_s": cpu[0], "workers_cpu_s": cpu[1], "steps": steps}


def _cpu() -> tuple[float, float]:
    """(CPU s of this process: the router, CPU s of reaped children: the workers)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _last_stats(path: Path) -> dict:
    """step -> mean service time (s per event: decode, process, encode, in the worker; wall time,
    so CPU contention inflates it) from the run's last stats record."""
    lines = path.read_text().splitlines() if path.is_file() else []
    record = json.loads(lines[-1]) if lines else {}
    return {name: rec.get("service_s", 0.0) for name, rec in record.get("steps", {}).items()}


def ctapipe_loop(path: str, passes: int) -> dict:
    """SimTelEventSource + CameraCalibrator + ImageProcessor + ShowerProcessor, one process."""
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    from ctapipe.calib import CameraCalibrator
    from ctapipe.image import ImageProcessor
    from ctapipe.io import SimTelEventSource
    from ctapipe.reco import ShowerProcessor
    from traitlets.config import Config

    config = Config({
        "CameraCalibrator": {"image_extractor_type": "NeighborPeakWindowSum"},
        "ImageProcessor": {"image_cleaner_type": "TailcutsImageCleaner"},
        "TailcutsImageCleaner": {"picture_threshold_pe": 10.0, "boundary_threshold_pe": 5.0,
                                 "min_picture_neighbors": 2, "keep_isolated_pixels": False},
        "ShowerProcessor": {"reconstructor_types": ["HillasReconstructor"]}})
    start, cpu = time.perf_counter(), time.process_time()
    steps, n, first, last = None, 0, 0.0, 0.0
    for _ in range(passes):
        source = SimTelEventSource(path, focal_length_choice="EQUIVALENT", config=config)
        if steps is None:
            steps = [cls(source.subarray, config=config)
                     for cls in (CameraCalibrator, ImageProcessor, ShowerProcessor)]
        for event in source:
            first = first or time.time()
            for process in steps:
                process(event)
            last = time.time()
            n += 1
    return {"n": n, "rate": n / (last - first), "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 events, 2 repeats (< 3 min)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="calibrate workers N (default: the number of cores)")
    parser.add_argument("--file", choices=sorted(FILES), default="sst1m")
    parser.add_argument("--events", type=int, default=None, help="at least this many events")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--readers", type=int, default=1,
                        help="producer steps sharing the passes (the source is serial)")
    parser.add_argument("--autoscale", action="store_true",
                        help="let the auto-scaler size the other stagers (min..max of the file)")
    args = parser.parse_args()
    from stages.datasets import resolve_path

    path = str(resolve_path(f"dataset:{FILES[args.file]}"))
    events = args.events or (500 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    per_file = ctapipe_loop(path, 1)["n"]  # also warms ctapipe's numba caches
    passes = math.ceil(events / per_file)
    print(f"{args.file}: {per_file} events per file x {passes} passes, {args.readers} reader(s), "
          f"{args.workers} calibrate workers, {os.cpu_count()} cores, {repeats} repeats")
    ratios, walls = [], []
    for r in range(repeats):
        ref = ctapipe_loop(path, passes)
        eng = run_engine(path, passes, args.workers, args.autoscale, args.readers)
        if eng["n"] != ref["n"]:
            raise RuntimeError(f"engine wrote {eng['n']} events, ctapipe processed {ref['n']}")
        ratios.append(eng["rate"] / ref["rate"])
        walls.append(ref["wall_s"] / eng["wall_s"])
        n = eng["n"]
        print(f"repeat {r}: engine {eng['rate']:6.1f} ev/s (wall {eng['wall_s']:5.1f} s, first "
              f"event out after {eng['first_event_s']:4.1f} s, written {eng['fill_s']:4.1f} s later, "
              f"{eng['workers_started']} workers)  ctapipe {ref['rate']:6.1f} ev/s "
              f"(wall {ref['wall_s']:5.1f} s)  {n} events  ratio {ratios[-1]:.2f}")
        print(f"  CPU ms/event: ctapipe {ref['cpu_s'] / n * 1e3:.1f}; engine router "
              f"{eng['router_cpu_s'] / n * 1e3:.1f} + workers {eng['workers_cpu_s'] / n * 1e3:.1f} "
              "(start-up included); service ms/event: " + ", ".join(
                  f"{k} {v * 1e3:.1f}" for k, v in eng["steps"].items()))
    print(f"wall-clock ratio (start-up included), median: {statistics.median(walls):.2f}")
    print(json.dumps({"events_per_s_ratio_vs_ctapipe_loop": round(statistics.median(ratios), 2),
                      "workers": args.workers}))


if __name__ == "__main__":
    main()
