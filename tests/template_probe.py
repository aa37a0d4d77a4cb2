"""Test-only producer for tests/test_engine_zygote.py: its context takes time to build, and the
module records, each time it is imported, the pid and the time (to ``$FLOW_PROBE_FILE``)."""

from __future__ import annotations

import os
import time

from flow.graph.params import Param
from flow.graph.step import Keyed, Producer

if os.environ.get("FLOW_PROBE_FILE"):
    with open(os.environ["FLOW_PROBE_FILE"], "a") as f:
        f.write(f"import {os.getpid()} {time.time()}\n")


class SlowContext(Producer):
    """Sleeps ``context_s`` in publish_context (as a reader building a large subarray would),
    or raises there with ``fail``; then yields ``n`` tiny events."""

    n = Param(int, 10, "events")
    context_s = Param(float, 1.0, "seconds publish_context takes")
    fail = Param(bool, False, "raise in publish_context")

    def publish_context(self) -> dict:
        t0 = time.time()
        time.sleep(self.context_s)
        if self.fail:
            raise RuntimeError("cannot read the subarray")
        if os.environ.get("FLOW_PROBE_FILE"):
            with open(os.environ["FLOW_PROBE_FILE"], "a") as f:
                f.write(f"context {os.getpid()} {t0} {time.time()}\n")
        return {"ready": True}

    def process(self):
        for i in range(self.n):
            yield Keyed(str(i), {"i": i, "value": i})
