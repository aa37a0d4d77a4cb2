"""Tiny, real steps for the engine's tests (unit, end-to-end and fault-injection).

Every event is a plain dict ``{"i": int, "value": int}`` (plus ``"part"`` after `Split`), so it
crosses any codec and is easy to check against an independent reference:

- `Counter` (producer): yields ``{"i": i, "value": i}`` for ``i in range(start, start + n)``, keyed
  ``str(i)``; publishes ``{"counter": {"n": n, "start": start}}`` as context.
- `AddOne` (stager): ``value += amount``.
- `DropOdd` (stager): drops events whose ``i`` is odd (returns None).
- `Split` (stager): one-to-many, ``parts`` copies with ``"part": 0..parts-1``.
- `RouteByBranch` (stager): sends even ``i`` to step ``even`` and odd ``i`` to step ``odd``
  with `flow.graph.step.To`.
- `FailOn` (stager): raises ``RuntimeError`` for the listed ``i`` (dead-letter and retry tests).
- `Sleep` (stager): sleeps ``ms`` per event (scaling and back-pressure tests).
- `ListConsumer` (consumer): appends one JSON line ``{"key", "step", "event"}`` per event to
  ``path`` (flushed at once, so a killed run leaves complete lines); `done_keys` reads them back.
- `add_one` (function stager, ``amount`` keyword) and `collect` (function, usable as consumer).

Use them from YAML as ``use: tests.steps:Counter`` (the current directory must be on sys.path: the
``flow`` command adds it; pytest run as ``python -m pytest`` from the repository root does too).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer, Keyed, Producer, Stager, To


class Counter(Producer):
    """Yields n events {"i": i, "value": i}, keyed str(i)."""

    n = Param(int, 10, "number of events")
    start = Param(int, 0, "first i")

    def process(self) -> Iterator[Keyed]:
        for i in range(self.start, self.start + self.n):
            yield Keyed(str(i), {"i": i, "value": i})

    def publish_context(self) -> dict[str, Any]:
        return {"counter": {"n": self.n, "start": self.start}}

    def total(self) -> int:
        return self.n


class AddOne(Stager):
    """Adds `amount` to event["value"]."""

    amount = Param(int, 1, "added to value")

    def process(self, event: dict) -> dict:
        return {**event, "value": event["value"] + self.amount}


class DropOdd(Stager):
    """Drops events with an odd i."""

    def process(self, event: dict) -> dict | None:
        return None if event["i"] % 2 else event


class Split(Stager):
    """One-to-many: `parts` copies of each event, with "part" 0..parts-1."""

    parts = Param(int, 2, "copies per input event")

    def process(self, event: dict) -> list[dict]:
        return [{**event, "part": k} for k in range(self.parts)]


class RouteByBranch(Stager):
    """Sends even i to the step named `even`, odd i to the step named `odd` (flow.To)."""

    even = Param(str, "even", "downstream step receiving even i")
    odd = Param(str, "odd", "downstream step receiving odd i")

    def process(self, event: dict) -> To:
        return To(self.odd if event["i"] % 2 else self.even, event)


class FailOn(Stager):
    """Raises RuntimeError for the listed i; passes the others through unchanged."""

    fail_on = Param(list, [], "values of i that fail")

    def process(self, event: dict) -> dict:
        if event["i"] in self.fail_on:
            raise RuntimeError(f"FailOn: i={event['i']}")
        return event


class Sleep(Stager):
    """Sleeps `ms` milliseconds per event, then passes it on."""

    ms = Param(float, 1.0, "milliseconds per event")

    def process(self, event: dict) -> dict:
        time.sleep(self.ms / 1000.0)
        return event


class ListConsumer(Consumer):
    """Appends {"key", "step", "event"} as one JSON line per event to `path`."""

    path = Param(str, REQUIRED, "JSON-lines output file")

    def setup(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def process(self, event: dict) -> None:
        self._file.write(json.dumps({"key": self.key, "step": self.name, "event": event}) + "\n")
        self._file.flush()

    def teardown(self) -> None:
        self._file.close()

    def done_keys(self) -> list[str]:
        return [row["key"] for row in read_jsonl(self.path)]


def read_jsonl(path: str) -> list[dict]:
    """The rows a `ListConsumer` wrote (empty if the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def add_one(event: dict, amount: int = 1) -> dict:
    """Function stager: value += amount."""
    return {**event, "value": event["value"] + amount}


COLLECTED: list[Any] = []


def collect(event: Any) -> None:
    """Function consumer (kind: consumer): appends to the in-process list COLLECTED."""
    COLLECTED.append(event)
