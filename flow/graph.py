"""The pipeline graph as a frozen value.

A `Graph` is a tuple of `StepSpec` (unique names) plus router options; edges are each step's ``to``.
It is built from YAML (`flow.config.load_graph`) or from Python (``StepSpec(...) | StepSpec(...)``),
and both give the same object. `validate` checks the shape before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Workers:
    """Worker bounds of a step: ``min == max`` is a static count."""

    min: int = 1
    max: int = 1


@dataclass(frozen=True)
class RouterOptions:
    """Router settings (the YAML ``router:`` mapping)."""

    queue_limit: int = 1000            # events queued per step before upstream credit stops
    queue_limit_bytes: int = 256 << 20  # bytes queued per step before upstream credit stops
    heartbeat_s: float = 1.0
    liveness: int = 5                  # missed heartbeats before a worker is declared dead
    max_retries: int = 3
    stuck_timeout_s: float = 60.0      # a worker busy on one event longer than this is killed
    prefetch: int = 4                  # credit window per worker (messages in flight)
    batch_max: int = 64                # events per DATA message when queues are deep
    cpu_budget: int = 0                # 0: the machine's cores
    stats_interval_s: float = 1.0
    dead_letter: str = "flow-deadletter.jsonl"
    shm_threshold: int = 1 << 20       # payload frames above this many bytes travel via shared memory


@dataclass(frozen=True)
class StepSpec:
    """One step: its name, kind, what it runs, its parameters and its downstream steps.

    ``use`` is ``"module:Name"`` (or the imported object itself when built from Python).
    ``lines`` maps keys (``"name"``, ``"use"``, ``"to"``, ``"with.picture"``...) to source lines for
    error messages; ``file`` is the YAML file it came from.
    """

    name: str
    kind: str                        # "producer" | "stager" | "consumer"
    use: Any
    params: tuple[tuple[str, Any], ...] = ()
    to: tuple[str, ...] = ()
    workers: Workers = Workers()
    pinned: bool = False             # stays on the router host (never placed on an agent)
    file: str | None = None
    line: int | None = None
    lines: tuple[tuple[str, int], ...] = ()

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def line_of(self, key: str) -> int | None:
        return dict(self.lines).get(key, self.line)

    def __or__(self, other: StepSpec | Chain) -> Chain:
        return Chain((self,)) | other


@dataclass(frozen=True)
class Chain:
    """A linear chain built with ``source | stage | sink``; `graph()` links and validates it."""

    steps: tuple[StepSpec, ...]

    def __or__(self, other: StepSpec | Chain) -> Chain:
        more = other.steps if isinstance(other, Chain) else (other,)
        return Chain(self.steps + more)

    def graph(self, name: str = "pipeline", router: RouterOptions | None = None) -> Graph:
        linked = [replace(s, to=(nxt.name,)) for s, nxt in zip(self.steps, self.steps[1:])]
        linked.append(self.steps[-1])
        return Graph(name=name, steps=tuple(linked), router=router or RouterOptions())


@dataclass(frozen=True)
class Graph:
    """A validated-on-demand pipeline: steps in declaration order plus router options."""

    name: str
    steps: tuple[StepSpec, ...]
    router: RouterOptions = field(default_factory=RouterOptions)
    file: str | None = None

    def __getitem__(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def producers(self) -> tuple[StepSpec, ...]:
        return tuple(s for s in self.steps if s.kind == "producer")

    @property
    def consumers(self) -> tuple[StepSpec, ...]:
        return tuple(s for s in self.steps if s.kind == "consumer")

    def inputs(self, name: str) -> tuple[str, ...]:
        """Names of the steps with an edge into ``name``."""
        return tuple(s.name for s in self.steps if name in s.to)
