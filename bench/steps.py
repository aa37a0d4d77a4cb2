"""Bench-only steps (used by bench/throughput.py and bench/scaling.py; not part of the engine).

- `Payload` (producer): builds ONE payload (numpy uint8 array or bytes of `size` bytes) and yields
  ``{"i": i, "data": payload}`` n times, like the raw PUSH/PULL sender re-sending one buffer.
- `NoOp` (stager): returns the event unchanged.
- `Stamp` (consumer): counts events and records the wall-clock time of the first and the last one;
  writes ``{"n", "first", "last"}`` as JSON to `path` at teardown (the bench reads events/s from it,
  so worker start-up and end-of-stream are not counted).
- `Burn` (stager): busy-loops `ms` milliseconds of CPU per event.
- `Rated` (producer): yields tiny events at `rate_hz`, at twice that rate after `double_after_s`,
  for `duration_s` in all; writes the wall-clock time of its start and of the doubling to `mark`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np

from flow.graph.params import Param
from flow.graph.step import Consumer, Keyed, Producer, Stager


class Payload(Producer):
    """Yields n events carrying the same pre-built payload of `size` bytes."""

    n = Param(int, 1000, "number of events")
    size = Param(int, 100, "payload bytes per event")
    as_bytes = Param(bool, False, "payload as bytes instead of a numpy uint8 array")

    def process(self) -> Iterator[Keyed]:
        payload = bytes(self.size) if self.as_bytes else np.zeros(self.size, dtype=np.uint8)
        for i in range(self.n):
            yield Keyed(str(i), {"i": i, "data": payload})

    def total(self) -> int:
        return self.n


class NoOp(Stager):
    """Passes the event on unchanged."""

    def process(self, event):
        return event


class Stamp(Consumer):
    """Counts events; records first/last arrival (time.time()); writes them to `path` at teardown."""

    path = Param(str, "", "JSON file written at teardown")

    def setup(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0

    def process(self, event) -> None:
        now = time.time()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1

    def teardown(self) -> None:
        if self.path:
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump({"n": self.count, "first": self.first, "last": self.last}, f)


class Burn(Stager):
    """Burns `ms` milliseconds of CPU per event (busy loop), then passes the event on."""

    ms = Param(float, 1.0, "CPU milliseconds per event")

    def process(self, event):
        end = time.perf_counter() + self.ms / 1000.0
        while time.perf_counter() < end:
            pass
        return event


class Rated(Producer):
    """Tiny events at `rate_hz`, then at 2 x `rate_hz` from `double_after_s`, for `duration_s`."""

    rate_hz = Param(float, 50.0, "events per second before the doubling")
    double_after_s = Param(float, 20.0, "seconds after the start when the rate doubles")
    duration_s = Param(float, 60.0, "total seconds of production")
    mark = Param(str, "", "JSON file receiving {start, doubled} wall-clock times")

    def process(self) -> Iterator[Keyed]:
        start_m = time.monotonic()
        start_w = time.time()
        if self.mark:
            with open(self.mark, "w", encoding="utf-8") as f:
                json.dump({"start": start_w, "doubled": start_w + self.double_after_s}, f)
        n1 = int(self.rate_hz * self.double_after_s)
        i = 0
        while True:
            if i < n1:
                due = i / self.rate_hz
            else:
                due = self.double_after_s + (i - n1) / (2 * self.rate_hz)
            if due >= self.duration_s:
                return
            delay = start_m + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield Keyed(str(i), {"i": i, "t": time.time()})
            i += 1
