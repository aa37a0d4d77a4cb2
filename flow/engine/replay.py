"""Re-running dead letters once the failing step is fixed (``flow replay``).

The replay graph is the original graph with its producers replaced by a `ReplaySource` that feeds
each dead event back to the step that failed on it, and with the steps that cannot be reached from
those steps left out. Consumers run in resume mode (they append, they do not truncate).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from flow.engine.deadletter import read_dead_letters
from flow.errors import ConfigError
from flow.graph.model import Graph, StepSpec
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Keyed, Producer, To
from flow.wire import codec
from flow.wire.shm import BytesShm


class ReplaySource(Producer):
    """Yields the events of a dead-letter file, each routed to the step that failed on it."""

    path = Param(str, REQUIRED, "dead-letter file (JSON lines)")

    def process(self) -> Iterator[Keyed]:
        for dl in read_dead_letters(self.path):
            shm = BytesShm(dl.segments) if dl.segments else None
            yield Keyed(dl.key, To(dl.step, codec.decode(list(dl.frames), shm=shm)))

    def total(self) -> int:
        return sum(1 for _ in read_dead_letters(self.path))


def replay_graph(graph: Graph, dead_letter_path: str) -> Graph:
    """The graph that re-runs the dead letters of ``dead_letter_path`` through ``graph``."""
    failed = sorted({dl.step for dl in read_dead_letters(dead_letter_path)})
    for name in failed:
        if name not in graph.names:
            raise ConfigError(f"dead letters name step '{name}', which is not in this graph",
                              graph.file, hint="pass the pipeline file the run used with --graph")
    keep, todo = set(), list(failed)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(graph[name].to)
    source = StepSpec("replay", "producer", f"{__name__}:ReplaySource",
                      params=(("path", str(dead_letter_path)),), to=tuple(failed))
    steps = (source,) + tuple(s for s in graph.steps if s.name in keep)
    router = replace(graph.router, dead_letter=str(dead_letter_path) + ".replay.jsonl")
    return replace(graph, name=f"{graph.name}-replay", steps=steps, router=router)
