"""Compile and cache the stage library's numba kernels ahead of the first run: ``python -m stages.warm``.

numba compiles a kernel on its first call, once per argument type, and the whole IACT chain takes
tens of seconds to compile. The kernels are ``cache=True``: the machine code is stored in
``$NUMBA_CACHE_DIR`` and loaded by every later process. Unset, it is ``~/.cache/flow-iact/numba``,
the default of flow's worker processes (`flow.engine.worker.worker_main`). `make venv` runs this
module once, so the first ``flow run`` loads the kernels instead of compiling them.

`warm` runs the demo chain in this process on a few toy events of both camera kinds, with both
charge extractors, three times: on writable arrays (a step's own results, an R0 calibration), on
read-only ones, which is how arrays arrive in a worker (zero-copy views of the message frames), and
with a read-only context and writable events, as in a fused chain; numba types them differently. The compiled signatures are those of a real run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

#: where flow's workers keep numba's cache when NUMBA_CACHE_DIR is unset (read before numba loads)
DEFAULT_CACHE = Path("~", ".cache", "flow-iact", "numba")
os.environ.setdefault("NUMBA_CACHE_DIR", str(DEFAULT_CACHE.expanduser()))

import numpy as np  # noqa: E402

from stages.calib import EXTRACTORS, ChargeExtraction  # noqa: E402
from stages.cleaning import TailcutsCleaning  # noqa: E402
from stages.image import ImageParameters  # noqa: E402
from stages.io.toy import ToyEventSource, ToyRenderer  # noqa: E402
from stages.quality import QualityCuts  # noqa: E402
from stages.reco import HillasReconstruction  # noqa: E402
from stages.selection import EnergyEstimate, GammaSelection  # noqa: E402

CHAIN = (TailcutsCleaning, ImageParameters, QualityCuts, HillasReconstruction, EnergyEstimate,
         GammaSelection)


def copied(value, readonly: bool):
    """A deep copy of ``value``; with ``readonly`` its arrays are read-only, as from the wire."""
    if isinstance(value, np.ndarray):
        out = value.copy()
        out.flags.writeable = not readonly
        return out
    if isinstance(value, Mapping):
        return {k: copied(v, readonly) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [copied(v, readonly) for v in value]
    return value


def warm(n_events: int = 6) -> dict[str, float]:
    """Run every demo step on ``n_events`` toy events; seconds spent per step (mostly compiling)."""
    source = ToyEventSource(n_events=n_events, seed=1, n_tels=4, camera="mixed", render=False)
    spent: dict[str, float] = {}
    # (context read-only, events read-only): a step's own arrays; arrays from the wire (an unfused
    # step: context and events both decoded); a fused chain (the context decoded, the events handed
    # on as objects from the step before)
    for ctx_readonly, readonly in ((False, False), (True, True), (True, False)):
        context = copied(source.publish_context(), ctx_readonly)
        steps = [ToyRenderer(context=context)]
        steps += [ChargeExtraction(context=context, extractor=e) for e in EXTRACTORS]
        steps += [cls(context=context) for cls in CHAIN]
        events = [k.event for k in source.process()]
        for step in steps:
            name = type(step).__name__
            t0 = time.perf_counter()
            step.setup()
            out = [step.process(copied(e, readonly)) for e in events]
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            if not isinstance(step, ChargeExtraction) or step.extractor == EXTRACTORS[-1]:
                events = [e for e in out if e is not None]   # both extractors see the waveforms
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.warm", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6, help="toy events per pass")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    spent = warm(args.events)
    slowest = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:4])
    print(f"stages.warm: numba kernels compiled and cached in {os.environ['NUMBA_CACHE_DIR']} "
          f"in {time.perf_counter() - t0:.1f} s ({slowest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
