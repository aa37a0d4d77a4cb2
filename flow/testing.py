"""Test helpers for people writing steps and graphs: one process, no sockets, no timing.

- `run_stager` runs one stager (a `Stager` class or a plain function) over events the way a worker
  does: ``setup``, then each event after a trip through the wire codec (so the step sees read-only
  arrays, and outputs that could not travel fail here, naming the bad value), then ``teardown``.
- `collect` runs a whole graph inline with its consumers replaced by in-memory sinks (and, if given,
  its producers by in-memory sources) and returns what reached each consumer.
- `FakeClock` drives heartbeat and scaling logic on simulated time.

    from flow.testing import run_stager, collect
    out = run_stager(MyCleaning, [event], picture_thresh=8.0)
    got = collect(graph, sources={"read": [ev1, ev2]})
    assert [k for k, _ in got["write"]] == ["0", "1"]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from flow.clock import FakeClock
from flow.engine.inline import run_inline
from flow.engine.outputs import producer_outputs, stager_outputs
from flow.graph.model import Graph, resolve_use
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer, Keyed, Producer, instantiate
from flow.observe.summary import RunSummary
from flow.wire import codec

_EVENTS: dict[str, list] = {}      # token -> events of a MemorySource / received by a MemorySink
_tokens = itertools.count()


def round_trip(event: Any) -> Any:
    """``event`` as a worker would receive it: encoded and decoded by the wire codec."""
    return codec.decode(codec.encode(event))


def run_stager(use: Any, events: Iterable[Any], *, context: dict | None = None,
               targets: tuple[str, ...] = ("next",), **params) -> list[tuple[str, str, Any]]:
    """``[(key, target, event), ...]`` a stager outputs for ``events`` (keyed "0", "1", ...,
    or by `Keyed`); ``targets`` are the downstream step names `To` may route to."""
    obj = resolve_use(use)
    step = instantiate(obj, "stager", getattr(obj, "__name__", "stager"), params, context or {})
    step.setup()
    out = []
    try:
        for i, event in enumerate(events):
            key, event = (str(event.key), event.event) if isinstance(event, Keyed) else (str(i), event)
            for k, target, ev in stager_outputs(step.process(round_trip(event)), key, step.name,
                                                targets):
                out.append((k, target, round_trip(ev)))
    finally:
        step.teardown()
    return out


class MemorySource(Producer):
    """Yields the events registered under `token` (see `collect`)."""

    token = Param(str, REQUIRED, "key of the events in flow.testing's registry")

    def process(self) -> Iterator[Any]:
        yield from _EVENTS[self.token]

    def total(self) -> int:
        return len(_EVENTS[self.token])


class MemorySink(Consumer):
    """Appends ``(key, event)`` to the list registered under `token` (see `collect`)."""

    token = Param(str, REQUIRED, "key of the list in flow.testing's registry")

    def process(self, event) -> None:
        _EVENTS[self.token].append((self.key, event))


class Collected(dict):
    """``{consumer name: [(key, event), ...]}`` in arrival order, and the run's ``summary``."""

    def __init__(self, received: dict, summary: RunSummary):
        super().__init__(received)
        self.summary = summary


def collect(graph: Graph, sources: dict[str, Iterable[Any]] | None = None,
            context: dict | None = None) -> Collected:
    """Run ``graph`` inline with in-memory consumers (and the producers named in ``sources``
    replaced by the given events); return what reached each consumer."""
    sources = sources or {}
    unknown = set(sources) - {p.name for p in graph.producers}
    if unknown:
        raise ValueError(f"sources for steps that are not producers: {sorted(unknown)}")
    tokens: dict[str, str] = {}
    steps = []
    for spec in graph.steps:
        if spec.kind == "consumer" or spec.name in sources:
            token = f"{spec.name}#{next(_tokens)}"
            tokens[spec.name] = token
            _EVENTS[token] = list(sources[spec.name]) if spec.name in sources else []
            spec = replace(spec, use=MemorySink if spec.kind == "consumer" else MemorySource,
                           params=(("token", token),))
        steps.append(spec)
    try:
        summary = run_inline(replace(graph, steps=tuple(steps)), context=context)
        return Collected({c.name: _EVENTS[tokens[c.name]] for c in graph.consumers}, summary)
    finally:
        for token in tokens.values():
            _EVENTS.pop(token, None)


def produced(use: Any, *, context: dict | None = None, limit: int | None = None,
             **params) -> list[tuple[str, Any]]:
    """``[(key, event), ...]`` a producer yields (at most ``limit``), each after a codec trip."""
    obj = resolve_use(use)
    step = instantiate(obj, "producer", getattr(obj, "__name__", "producer"), params, context or {})
    step.setup()
    try:
        outs = producer_outputs(step.process(), step.name, ("next",))
        return [(k, round_trip(ev)) for k, _, ev in itertools.islice(outs, limit)]
    finally:
        step.teardown()


__all__ = ["Collected", "FakeClock", "MemorySink", "MemorySource", "collect", "produced",
           "round_trip", "run_stager"]
