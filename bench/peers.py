"""The same real chain under flow and under its peers: a plain loop, multiprocessing.Pool, Dask, Ray.

    python bench/peers.py [--quick] [--events N] [--repeats N]

The chain is configs/simtel_dl2.yaml's five stagers, the project's own step objects (calibrate,
clean, parameters, quality, reconstruct, with the config's parameters and the SST-1M file's
context). The SST-1M file's events are read once and preloaded; every system then re-yields them
(``--events`` in all) and gets the chain's output event back, with 2 workers each. The chain edits
its event in place (calibrate drops the waveforms it has integrated), so every system is handed a
fresh copy of each event's dicts and lists, its arrays shared (`fresh`), as a reader hands out new
events: re-yielding the same objects let the first system strip the waveforms from the preloaded
events, and every later one then timed a chain with nothing to calibrate.

- loop: the chain in this process (the baseline);
- pool1 / pool16: ``multiprocessing.Pool(2)`` started by forkserver (a fork of this process, which
  by then has Dask's and pyzmq's threads, once hung for good on a lock), each worker building the
  chain once in its initializer and running it on one event there (its jitted kernels loaded
  before timing, as flow's workers load theirs in set-up), ``imap`` with chunksize 1 and 16;
- dask: ``distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``, one task
  per event on a worker-local chain, 8 events in flight;
- ray: two actors holding the chain, round robin, 8 events in flight;
- flow: a graph (preloaded source -> the chain -> a counting consumer) with the chain on 2 workers:
  fused (the default), and unfused (five stagers, 2 workers each) for reference.

events/s counts from the first result to the last (steady state); each system's start-up (pool,
cluster or actors up and a first result back; flow: the run's wall time minus that span) is
reported apart. Repeats are interleaved; medians are reported. ratio = system events/s / loop
events/s per repeat. Ray and Dask are optional (``pip install .[bench]``): a missing one is
skipped. The last line is one JSON object: ``{"vs_loop": {...}, "startup_s": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
os.environ["PYTHONPATH"] = os.pathsep.join(  # workers of every system find bench.peers
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
from flow.engine.memory import default_numba_cache  # noqa: E402

default_numba_cache()   # the kernels `make venv` compiled (before numba loads)
warnings.filterwarnings("ignore")

from flow.graph.params import Param  # noqa: E402
from flow.graph.step import Consumer, Keyed, Producer  # noqa: E402

SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
CHAIN = ("calibrate", "clean", "parameters", "quality", "reconstruct")
IN_FLIGHT = 8


# ------------------------------------------------------------------------------ the chain
def chain_specs():
    from flow.graph.loader import load_graph
    graph = load_graph(ROOT / "configs" / "simtel_dl2.yaml",
                       {"read.path": f"dataset:{SST1M}"})
    return graph, [graph[name] for name in CHAIN]


def load_events() -> tuple[dict, list]:
    """(the source's context, the SST-1M file's events), decoded by the whole reader
    (`SimtelSource`, with the config's reader parameters): the config's own reader only frames
    raw objects, which its `parse` step, not part of the measured chain, decodes."""
    from flow.graph.step import instantiate
    from stages.io.simtel import SimtelSource
    graph, _ = chain_specs()
    read = graph["read"]
    src = instantiate(SimtelSource, "producer", "read", read.param_dict)
    context = src.publish_context()
    return context, [k.event for k in src.process()]


def fresh(event):
    """A copy of ``event``'s dicts and lists, its arrays (and other leaves) shared."""
    if type(event) is dict:
        return {k: fresh(v) for k, v in event.items()}
    if type(event) is list:
        return [fresh(v) for v in event]
    return event


def make_chain(context: dict) -> list:
    from flow.graph.model import resolve_use
    from flow.graph.step import instantiate
    _, specs = chain_specs()
    steps = [instantiate(resolve_use(s.use), "stager", s.name, s.param_dict, context)
             for s in specs]
    for s in steps:
        s.setup()
    return steps


def run_chain(steps: list, event):
    for s in steps:
        event = s.process(event)
        if event is None:
            return None
    return event


_CHAIN: list | None = None   # the chain of this worker process (Pool, Dask)


def _init_worker(context: dict, warm_event=None) -> None:
    """A Pool worker's chain, run once on ``warm_event`` (jitted kernels loaded before timing, as
    flow's workers load theirs in set-up)."""
    global _CHAIN
    _CHAIN = make_chain(context)
    if warm_event is not None:
        run_chain(_CHAIN, fresh(warm_event))


def _process(event):
    return run_chain(_CHAIN, event)


def _dask_process(event, context):
    global _CHAIN
    if _CHAIN is None:
        _CHAIN = make_chain(context)
    return run_chain(_CHAIN, event)


# ------------------------------------------------------------------------------ flow's steps
class Preloaded(Producer):
    """The SST-1M file's events read in setup, re-yielded until ``n`` events (unique keys)."""

    n = Param(int, 500, "events in all")

    def publish_context(self) -> dict:
        return load_events()[0]      # the subarray and calibration the chain needs

    def setup(self) -> None:
        self._events = load_events()[1]

    def process(self) -> Iterator[Keyed]:
        for i in range(self.n):
            yield Keyed(str(i), fresh(self._events[i % len(self._events)]))

    def total(self) -> int:
        return self.n


class Count(Consumer):
    """Counts events; writes ``{"n", "first", "last"}`` (time.time()) to ``stamp`` at teardown."""

    stamp = Param(str, "", "JSON file")

    def setup(self) -> None:
        self._n, self._first, self._last = 0, 0.0, 0.0

    def process(self, event) -> None:
        self._last = time.time()
        self._first = self._first or self._last
        self._n += 1

    def teardown(self) -> None:
        Path(self.stamp).write_text(json.dumps({"n": self._n, "first": self._first,
                                                "last": self._last}))


# ------------------------------------------------------------------------------ the systems
def timed(results: Iterator, t0: float, n: int) -> dict:
    """events/s from the first result to the last, and the start-up before the first."""
    first = last = 0.0
    count = 0
    for _ in results:
        last = time.perf_counter()
        first = first or last
        count += 1
    assert count == n, f"{count} results for {n} events"
    return {"rate": (n - 1) / max(1e-9, last - first), "startup_s": first - t0}


def stream(events: list, n: int) -> Iterator:
    return (fresh(events[i % len(events)]) for i in range(n))


def run_loop(context, events, n) -> dict:
    t0 = time.perf_counter()
    steps = make_chain(context)
    return timed((run_chain(steps, e) for e in stream(events, n)), t0, n)


def run_pool(context, events, n, chunksize: int) -> dict:
    t0 = time.perf_counter()
    # forkserver, not fork: by now this process has Dask's and pyzmq's threads, and a pool forked
    # from it once hung for good on a lock one of them held at the fork
    with mp.get_context("forkserver").Pool(2, initializer=_init_worker,
                                            initargs=(context, events[0])) as pool:
        return timed(pool.imap(_process, stream(events, n), chunksize=chunksize), t0, n)


def windowed(submit, wait, items: Iterator) -> Iterator:
    """Keep IN_FLIGHT submitted; yield results as they complete."""
    pending = []
    for item in items:
        pending.append(submit(item))
        if len(pending) >= IN_FLIGHT:
            done, pending = wait(pending)
            yield from done
    while pending:
        done, pending = wait(pending)
        yield from done


def run_dask(context, events, n) -> dict:
    from distributed import Client, LocalCluster, wait
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ctx = client.scatter(context, broadcast=True)

        def dwait(pending):
            res = wait(pending, return_when="FIRST_COMPLETED")
            return [f.result() for f in res.done], list(res.not_done)

        return timed(windowed(lambda e: client.submit(_dask_process, e, ctx, pure=False), dwait,
                              stream(events, n)), t0, n)


def run_ray(context, events, n) -> dict:
    import ray
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        @ray.remote
        class ChainActor:
            def __init__(self, ctx):
                self.steps = make_chain(ctx)

            def process(self, event):
                return run_chain(self.steps, event)

        ctx = ray.put(context)
        actors = [ChainActor.remote(ctx) for _ in range(2)]
        turn = iter(range(1 << 62))

        def rwait(pending):
            done, rest = ray.wait(pending, num_returns=1)
            return ray.get(done), rest

        return timed(windowed(lambda e: actors[next(turn) % 2].process.remote(e), rwait,
                              stream(events, n)), t0, n)
    finally:
        ray.shutdown()


def run_flow(n: int, fused: bool, inline: bool = False) -> dict:
    from flow.engine.run import RunOptions, run
    from flow.graph.loader import graph_from_text
    _, specs = chain_specs()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        steps = [{"name": "read", "kind": "producer", "use": "bench.peers:Preloaded",
                  "with": {"n": n}, "to": [CHAIN[0]]}]
        for s, nxt in zip(specs, list(CHAIN[1:]) + ["count"], strict=True):
            steps.append({"name": s.name, "kind": "stager", "use": s.use,
                          "with": s.param_dict, "workers": 2, "to": [nxt]})
        steps.append({"name": "count", "kind": "consumer", "use": "bench.peers:Count",
                      "with": {"stamp": f"{tmp}/stamp.json"}})
        text = json.dumps({"name": "peers", "steps": steps,
                           "router": {"fuse": fused, "dead_letter": f"{tmp}/dl.jsonl"}})
        graph = graph_from_text(text, f"{tmp}/peers.yaml")
        t0 = time.time()
        summary = run(graph, RunOptions(quiet=True, inline=inline, print_summary=False,
                                        run_dir=f"{tmp}/run", scale=False))
        stamp = json.loads(Path(f"{tmp}/stamp.json").read_text())
    if summary.exit_code != 0 or stamp["n"] != n:
        raise RuntimeError(f"flow run failed: {summary.failures}")
    return {"rate": (n - 1) / max(1e-9, stamp["last"] - stamp["first"]),
            "startup_s": stamp["first"] - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer events, 2 repeats")
    p.add_argument("--events", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--only", default="", help="comma-separated systems (default: all)")
    a = p.parse_args(argv)
    n = a.events or (620 if a.quick else 1984)
    repeats = a.repeats or (2 if a.quick else 3)
    context, events = load_events()
    systems = {
        "loop": lambda: run_loop(context, events, n),
        "pool1": lambda: run_pool(context, events, n, 1),
        "pool16": lambda: run_pool(context, events, n, 16),
        "dask": lambda: run_dask(context, events, n),
        "ray": lambda: run_ray(context, events, n),
        "flow_fused": lambda: run_flow(n, True),
        "flow_unfused": lambda: run_flow(n, False),
        "flow_inline": lambda: run_flow(n, True, inline=True),
    }
    for name, module in (("dask", "distributed"), ("ray", "ray")):
        try:
            __import__(module)
        except ImportError:
            print(f"{name}: not installed (pip install .[bench]); skipped")
            systems.pop(name)
    if a.only:
        keep = {"loop", *a.only.split(",")}
        systems = {k: v for k, v in systems.items() if k in keep}
    results: dict = {k: [] for k in systems}
    for r in range(repeats):
        for name, fn in systems.items():
            res = fn()
            results[name].append(res)
            print(f"repeat {r + 1}/{repeats} {name:<13} {res['rate']:8.1f} ev/s  "
                  f"start-up {res['startup_s']:6.2f} s", flush=True)
    vs = {k: statistics.median(x["rate"] / lo["rate"] for x, lo in zip(v, results["loop"],
                                                                        strict=True))
          for k, v in results.items()}
    print(f"\n{n} events, 2 workers each; ratio to the plain loop (median of {repeats})")
    print(f"{'system':<13} {'ev/s':>8} {'vs loop':>8} {'start-up s':>10}")
    for k, v in results.items():
        print(f"{k:<13} {statistics.median(x['rate'] for x in v):>8.1f} {vs[k]:>8.2f} "
              f"{statistics.median(x['startup_s'] for x in v):>10.2f}")
    out = {"vs_loop": {k: round(v, 3) for k, v in vs.items()},
           "startup_s": {k: round(statistics.median(x["startup_s"] for x in v), 3)
                         for k, v in results.items()},
           "ev_s": {k: round(statistics.median(x["rate"] for x in v), 1)
                    for k, v in results.items()},
           "events": n}
    if "flow_fused" in vs:
        out["flow_fused_vs"] = {k: round(vs["flow_fused"] / vs[k], 3) for k in vs
                                if k not in ("flow_fused", "loop")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
