"""The step API: what a pipeline author writes. Steps never touch sockets.

Three kinds of step:

- `Producer`: ``process()`` yields events (optionally `Keyed` to choose their key).
- `Stager`: ``process(event)`` returns an event, ``None`` (drop), a list/tuple/generator of events
  (one-to-many), or `To` values to route to a named downstream step.
- `Consumer`: ``process(event)`` keeps the event (writes a file...). ``self.key`` holds its key.

Parameters are declared on the class with `flow.Param`. Before ``setup`` the engine sets
``self.name`` (the step's name in the graph) and ``self.context`` (read-only values published once by
the producers through ``publish_context``, e.g. the telescope subarray, so they do not travel with
every event). A plain function ``module:function`` is a stager (`FunctionStager`).
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flow.graph.params import resolve_params


@dataclass(frozen=True, slots=True)
class To:
    """A stager output sent only to the named downstream step (explicit routing)."""

    target: str
    event: Any


@dataclass(frozen=True, slots=True)
class Keyed:
    """A producer output with an explicit key (e.g. ``f"{obs_id}:{event_id}"``)."""

    key: str
    event: Any


class InputWarning(UserWarning):
    """A producer's input ended early (a truncated or corrupt file). Warn it, naming the file and
    the last event read, and end the stream: the engine reports it as a failure of the step in
    the run summary and the statistics stream (the events read before it go on)."""


class Step:
    """Base of every step: parameters, ``setup``, ``teardown``."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str | None = None, context: Mapping | None = None, **params: Any):
        self._params = resolve_params(type(self), params)
        self.name = name or type(self).__name__
        self.context: Mapping = context or {}
        self.key: str | None = None

    def setup(self) -> None:
        """Called once per worker process before the first event (open files, JIT-compile)."""

    def teardown(self) -> None:
        """Called once per worker process after the last event (close files)."""

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)


class Producer(Step):
    """Yields events. One or more per graph; runs as a single process."""

    kind = "producer"
    #: True when the same parameters yield the same events in the same order (a file, a seeded
    #: generator): a producer that dies is then restarted, and it resumes after the last event
    #: the router had accepted from it. A live source (a socket) is not replayable: its death
    #: ends the run (``flow run --resume`` completes it).
    replayable: ClassVar[bool] = False

    def process(self) -> Iterable[Any]:
        raise NotImplementedError

    def resume(self, start: int) -> Iterable[Any]:
        """The events of ``process()`` from the ``start``-th on (``None`` is not counted), for a
        restarted replayable producer. This default reads and drops the first ``start`` events;
        a source that can seek may override it (the keys must stay the same)."""
        n = 0
        for event in self.process():
            if event is None:
                continue
            if n >= start:
                yield event
            else:
                n += 1

    def publish_context(self) -> dict[str, Any]:
        """Values every downstream step receives once in ``self.context`` (default: none).

        Called in the launching process before any worker starts; keep it cheap (read a header).
        """
        return {}

    def total(self) -> int | None:
        """How many events this producer will yield, when known (for progress and ETA)."""
        return None


class Stager(Step):
    """Takes one event, returns zero, one or many events. Scaled over worker processes."""

    kind = "stager"

    def process(self, event: Any) -> Any:
        raise NotImplementedError


class Consumer(Step):
    """Keeps events (writes files). Sees each (key, path) exactly once; runs as one process."""

    kind = "consumer"

    def process(self, event: Any) -> None:
        raise NotImplementedError

    def done_keys(self) -> Iterable[str]:
        """Keys already held from an earlier run (for ``flow run --resume``); default none."""
        return ()


class FunctionStager(Stager):
    """Wraps a plain callable ``f(event) -> event`` as a stager."""

    def __init__(self, func: Callable, name: str | None = None, context=None, **params):
        self._func = func
        super().__init__(name=name or getattr(func, "__name__", "function"), context=context)
        self._kwargs = params

    def process(self, event):
        return self._func(event, **self._kwargs)


class FunctionConsumer(Consumer):
    """Wraps a plain callable ``f(event)`` as a consumer."""

    def __init__(self, func: Callable, name: str | None = None, context=None, **params):
        self._func = func
        super().__init__(name=name or getattr(func, "__name__", "function"), context=context)
        self._kwargs = params

    def process(self, event):
        self._func(event, **self._kwargs)


def import_object(spec: str) -> Any:
    """Import ``module:attr`` (or ``module.attr``). Raises ImportError/AttributeError as usual."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"'{spec}' is not of the form 'module:Name'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def step_kind_of(obj: Any) -> str | None:
    """'producer'/'stager'/'consumer' for a step class, 'function' for a callable, else None."""
    if inspect.isclass(obj) and issubclass(obj, Step):
        return obj.kind or None
    if callable(obj):
        return "function"
    return None


def instantiate(obj: Any, kind: str, name: str, params: Mapping, context: Mapping | None = None) -> Step:
    """Build the step object for ``obj`` (a Step class or a plain callable) of the given kind."""
    if inspect.isclass(obj) and issubclass(obj, Step):
        return obj(name=name, context=context, **dict(params))
    if kind == "consumer":
        return FunctionConsumer(obj, name=name, context=context, **dict(params))
    return FunctionStager(obj, name=name, context=context, **dict(params))


def iter_outputs(result: Any) -> Iterator[Any]:
    """Normalise a stager's return value into a stream of outputs (events or `To`)."""
    if result is None:
        return iter(())
    if isinstance(result, (list, tuple, types.GeneratorType)):
        return (r for r in result if r is not None)
    return iter((result,))
