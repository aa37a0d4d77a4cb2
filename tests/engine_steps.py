"""Steps for the engine's fault-injection tests (besides the plain ones in tests/steps.py).

Faults that must happen once (crash, hang) use a marker file so the redelivered event succeeds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer, Keyed, Producer, Stager


class FailSetup(Stager):
    """Raises in setup."""

    def setup(self) -> None:
        raise RuntimeError("calibration table missing")

    def process(self, event):
        return event


class CrashOnce(Stager):
    """The first worker to see i == `on` dies with os._exit (like a segfault)."""

    at = Param(int, 3, "i that kills the worker once")
    marker = Param(str, REQUIRED, "file created when the crash has happened")

    def process(self, event):
        if event["i"] == self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(11)
        return event


class HangOnce(Stager):
    """The first worker to see i == `on` hangs forever inside process."""

    at = Param(int, 3, "i that hangs the worker once")
    marker = Param(str, REQUIRED, "file created when the hang has started")

    def process(self, event):
        if event["i"] == self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            time.sleep(3600)
        return event


class CrashAlways(Stager):
    """Every worker dies on i == `on` (a poison event)."""

    at = Param(int, 3, "i that kills every worker")

    def process(self, event):
        if event["i"] == self.at:
            os._exit(11)
        return event


class Blobs(Producer):
    """Yields n events carrying a float32 array of `nbytes` bytes, keyed str(i)."""

    n = Param(int, 10, "number of events")
    nbytes = Param(int, 1 << 20, "payload bytes per event")

    def process(self) -> Iterator[Keyed]:
        data = np.arange(self.nbytes // 4, dtype=np.float32)
        for i in range(self.n):
            yield Keyed(str(i), {"i": i, "value": i, "data": data})

    def total(self) -> int:
        return self.n


class GarbleAckOnce(Stager):
    """On i == `at` (once per `marker` file), makes this worker's next ACK malformed (a worker
    bug, or garbage on the wire): the router must reject it without losing the lease's events."""

    at = Param(int, 5, "i whose lease gets a malformed ACK")
    what = Param(str, "failed", "what is garbled: the failure list, or the packed output 'items'")
    marker = Param(str, REQUIRED, "file marking that the fault happened")

    def process(self, event):
        if event["i"] == self.at and not os.path.exists(self.marker):
            Path(self.marker).write_text("garbled")
            import gc

            from flow.wire import protocol as P
            # the worker runs as `python -m flow.engine.worker`: its class lives in __main__; it was
            # frozen after setup (flow.engine.memory.tune_gc), and get_objects skips frozen objects
            gc.unfreeze()
            w = next(o for o in gc.get_objects()
                     if type(o).__name__ == "Worker" and hasattr(o, "send_outputs"))
            send = w.send

            def garbled(command, envelope=None, frames=None):
                if command == P.ACK:
                    envelope = dict(envelope or {}, **({"failed": "garbage"} if self.what == "failed"
                                                       else {"out": b"\xc1" + envelope["out"]}))
                    w.send = send
                return send(command, envelope, frames)
            w.send = garbled
        return event


class Filled(Producer):
    """Yields n events whose float32 array of `nbytes` bytes is filled with i (a new array each)."""

    n = Param(int, 10, "number of events")
    nbytes = Param(int, 1 << 20, "payload bytes per event")

    def process(self) -> Iterator[Keyed]:
        for i in range(self.n):
            yield Keyed(str(i), {"i": i, "data": np.full(self.nbytes // 4, i, np.float32)})


class Keeper(Consumer):
    """Keeps the arrays of events i < `keep` to the end and every other one for `hold` events,
    checking each time that every array it holds still has its own values; writes
    ``{"keys", "bad", "segments"}`` as JSON to `path` at teardown (segments: distinct names)."""

    keep = Param(int, 10, "events whose arrays are kept to the end")
    hold = Param(int, 5, "events the other arrays are held for")
    path = Param(str, "", "JSON report")

    def setup(self) -> None:
        self.kept: dict[int, np.ndarray] = {}
        self.recent: list[tuple[int, np.ndarray]] = []
        self.keys: list[str] = []
        self.bad: list[int] = []
        self.names: set[str] = set()

    def process(self, event) -> None:
        from flow.wire import codec
        i, data = event["i"], event["data"]
        hit = codec._shm_store.lookup(data) if codec._shm_store is not None else None
        if hit is not None:
            self.names.add(hit[0])
        (self.kept.__setitem__(i, data) if i < self.keep else self.recent.append((i, data)))
        self.recent = self.recent[-self.hold:]
        self.keys.append(self.key)
        self.check()

    def check(self) -> None:
        for i, data in [*self.kept.items(), *self.recent]:
            if not (data[0] == i and data[-1] == i and data[len(data) // 2] == i):
                self.bad.append(i)

    def teardown(self) -> None:
        self.check()
        Path(self.path).write_text(json.dumps({"keys": self.keys, "bad": sorted(set(self.bad)),
                                               "segments": len(self.names)}))


class SlowCount(Consumer):
    """Sleeps `ms` per event and appends its key to `path` (one line per event)."""

    ms = Param(float, 50.0, "milliseconds per event")
    path = Param(str, REQUIRED, "output file")

    def setup(self) -> None:
        self._f = open(self.path, "a", encoding="utf-8")

    def process(self, event) -> None:
        time.sleep(self.ms / 1000)
        self._f.write(self.key + "\n")
        self._f.flush()

    def teardown(self) -> None:
        self._f.close()

    def done_keys(self):
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]


class Busy(Stager):
    """Burns CPU for `ms` per event, or `ms_after` for events with i >= `switch_at`."""

    ms = Param(float, 1.0, "CPU milliseconds per event")
    ms_after = Param(float, 0.0, "CPU milliseconds per event from i >= switch_at (0: same)")
    switch_at = Param(int, 0, "i from which ms_after applies (0: never)")

    def process(self, event):
        ms = self.ms_after if self.switch_at and event["i"] >= self.switch_at else self.ms
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            pass
        return event


class BlobSums(Consumer):
    """Writes ``key sum(data) writeable`` per event to `path` (checks big payloads arrived intact)."""

    path = Param(str, REQUIRED, "output file")

    def setup(self) -> None:
        self._f = open(self.path, "a", encoding="utf-8")

    def process(self, event) -> None:
        data = event["data"]
        self._f.write(f"{self.key} {float(data.sum(dtype=np.float64))} {int(data.flags.writeable)}\n")
        self._f.flush()

    def teardown(self) -> None:
        self._f.close()


class FailOnBig(Stager):
    """Raises for the listed i (dead letters carrying shared-memory payloads)."""

    fail_on = Param(list, [], "values of i that fail")

    def process(self, event):
        if event["i"] in self.fail_on:
            raise RuntimeError(f"FailOnBig: i={event['i']}")
        return event
