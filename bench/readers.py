"""Events per second of flow's sim_telarray reader vs the ctapipe-EventSource adapter, same file.

Both producers run in this process over the same file and the same events, producing the same
flow events (stages.io.simtel.SimtelSource: eventio directly; stages.io.ctapipe_source.CtapipeSource:
ctapipe's SimTelEventSource, then its containers turned into flow's arrays). Each repeat times
one full pass of each, alternating which goes first; the ratio is the median of the per-repeat
ratios (simtel ev/s / adapter ev/s). Opening the file and publishing the context are excluded
(each producer's context is built once before timing). The last line printed is one JSON object:
``{"file": ..., "events": n, "simtel_ev_s": x, "adapter_ev_s": y, "ratio": r}``.

    python bench/readers.py [--quick] [--file NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
warnings.filterwarnings("ignore")

from astropy.utils import iers  # noqa: E402

iers.conf.auto_download = False
iers.conf.auto_max_age = None

from stages.io.ctapipe_source import CtapipeSource  # noqa: E402
from stages.io.simtel import SimtelSource  # noqa: E402

DEFAULT_FILE = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"


def one_pass(producer) -> tuple[int, float]:
    """(events, seconds) of one full pass over the producer's events."""
    start = time.perf_counter()
    n = sum(1 for _ in producer.process())
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats of 20 events")
    parser.add_argument("--file", default=DEFAULT_FILE, help="dataset name or path")
    parser.add_argument("--events", type=int, default=0, help="events per pass (0 = all)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    events = args.events or (20 if args.quick else 0)
    repeats = 3 if args.quick else args.repeats
    path = args.file if os.path.exists(args.file) else f"dataset:{args.file}"
    producers = {"simtel": SimtelSource(path=path, max_events=events),
                 # EQUIVALENT: files without effective focal lengths open too (events unchanged)
                 "adapter": CtapipeSource(path=path, max_events=events, config={
                     "SimTelEventSource": {"focal_length_choice": "EQUIVALENT"}})}
    for producer in producers.values():
        producer.publish_context()
    one_pass(producers["adapter"])  # warm both (imports, caches) before timing
    one_pass(producers["simtel"])
    rates, ratios, counts = {"simtel": [], "adapter": []}, [], set()
    for repeat in range(repeats):
        order = ("simtel", "adapter") if repeat % 2 == 0 else ("adapter", "simtel")
        this = {}
        for name in order:
            n, seconds = one_pass(producers[name])
            counts.add(n)
            this[name] = n / seconds
            rates[name].append(this[name])
        ratios.append(this["simtel"] / this["adapter"])
    if len(counts) != 1:
        raise SystemExit(f"the readers gave different event counts: {sorted(counts)}")
    result = {"file": os.path.basename(args.file), "events": counts.pop(),
              "simtel_ev_s": round(statistics.median(rates["simtel"]), 2),
              "adapter_ev_s": round(statistics.median(rates["adapter"]), 2),
              "ratio": round(statistics.median(ratios), 3)}
    print(f"{'reader':<40} {'events/s (median)':>18}")
    print(f"{'stages.io.simtel:SimtelSource':<40} {result['simtel_ev_s']:>18.1f}")
    print(f"{'stages.io.ctapipe_source:CtapipeSource':<40} {result['adapter_ev_s']:>18.1f}")
    print(f"simtel / adapter: {result['ratio']:.2f}x over {repeats} interleaved repeats of "
          f"{result['events']} events")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
