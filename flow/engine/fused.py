"""A fused chain in one worker: the steps of a chain (flow/graph/fusion.py) run in order on each
event, which passes from step to step as a Python object (no encoding, no router hop).

`FusedChain.run` behaves as the unfused steps would, seen from outside: a step's ``None`` drops
the event, a list or generator yields several (keys ``key/0``, ``key/1``...), `To` names the next
step (inside a chain a step has one target) or, on the last step, any of its targets; paths are
extended by each step's index exactly as the router would. A step that raises loses only the
events it was given: its siblings go on, and the input is reported failed under that step's name
(the router retries the input through the whole chain, as it retries any event). On an event's
last attempt (``careful``) each step's input is encoded before the step runs, so that the dead
letter holds what the failing step received and ``flow replay`` re-runs that step. Per-step
counters (in, done, out, busy seconds) are kept for the statistics, and a tapped edge inside the
chain gets its sample here (`take_sample`). No sockets here.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

from flow.engine.outputs import ALL, path_after, stager_outputs
from flow.wire import codec


@dataclass
class Member:
    """One step of a chain: its name, instance, index in the graph and targets."""

    name: str
    step: object
    index: int
    targets: tuple[str, ...]
    paths: dict = field(default_factory=dict)   # input path -> path after this step (cached)

    def next_path(self, path: str) -> str:
        p = self.paths.get(path)
        if p is None:
            p = self.paths[path] = path_after(path, self.index)
            if len(self.paths) > 4096:    # paths repeat (one per route through the graph)
                self.paths.clear()
        return p


class FusedChain:
    """The steps of one chain and their counters (see the module docstring)."""

    def __init__(self, members: list[Member]):
        self.members = members
        self.counts = [[0, 0, 0, 0.0] for _ in members]    # n_in, done, n_out, busy_s
        self.tap = ""        # a step whose next output is wanted as a sample (the monitor's tap)
        self.sample: list | None = None   # [step, key, frames] of that output, once taken

    def take_counts(self) -> list:
        """The counters since the previous call (sent with each ACK), then reset."""
        out, self.counts = self.counts, [[0, 0, 0, 0.0] for _ in self.members]
        return out

    def run(self, key: str, path: str, event, careful: bool = False
            ) -> tuple[list, list | None]:
        """(outputs ``[(key, path, target, event)]`` of the last step, the first failure or
        None): a failure is ``[error, traceback, step]`` plus, when ``careful`` and the step is
        not the first, ``key, path, frames`` of its input."""
        clock = time.perf_counter
        counts = self.counts
        if careful or self.tap:
            return self._run_from(0, [(key, path, event)], careful)
        # the common case: one event, each step returning one dict; the first step that returns
        # anything else hands its result over to the general loop (`_run_from`)
        for j, m in enumerate(self.members):
            c = counts[j]
            c[0] += 1
            t0 = clock()
            try:
                result = m.step.process(event)
            except Exception as exc:   # one event: nothing else is lost
                c[3] += clock() - t0
                return [], [f"{type(exc).__name__}: {exc}", traceback.format_exc(), m.name]
            if type(result) is not dict:
                return self._run_from(j, [(key, path, event)], careful, (result, t0))
            c[1] += 1
            c[2] += 1
            c[3] += clock() - t0
            path = m.next_path(path)
            event = result
        return [(key, path, ALL, event)], None

    def _run_from(self, start: int, frontier: list, careful: bool, first=None
                  ) -> tuple[list, list | None]:
        """The general loop, from step ``start`` on ``frontier`` ``[(key, path, event)]``;
        ``first``: (result, t0) of step ``start`` on the single event of ``frontier``, when
        already computed."""
        failure = None
        clock = time.perf_counter
        last = len(self.members) - 1
        out: list = []
        for j in range(start, last + 1):
            m = self.members[j]
            c = self.counts[j]
            nxt: list = []
            process = m.step.process
            if first is None:
                c[0] += len(frontier)
            for k, p, ev in frontier:
                snap = [bytes(f) for f in codec.encode(ev)] if careful and j else None
                t0 = clock()
                try:
                    if first is not None:
                        result, t0 = first
                        first = None
                    else:
                        result = process(ev)
                    new_path = m.next_path(p)
                    if type(result) is dict:
                        routed = ((k, ALL, result),)
                    else:
                        routed = stager_outputs(result, k, m.name, m.targets)
                except Exception as exc:
                    c[3] += clock() - t0
                    if failure is None:
                        failure = [f"{type(exc).__name__}: {exc}", traceback.format_exc(), m.name]
                        if snap is not None:
                            failure += [k, p, snap]
                    continue
                c[3] += clock() - t0
                c[1] += 1
                c[2] += len(routed)
                if routed and m.name == self.tap and self.sample is None:
                    self.take_sample(m.name, routed[0])
                if j == last:
                    out.extend((k2, new_path, t, ev2) for k2, t, ev2 in routed)
                else:
                    nxt.extend((k2, new_path, ev2) for k2, _, ev2 in routed)
            frontier = nxt
        return out, failure

    def take_sample(self, step: str, output: tuple) -> None:
        """Keep ``output`` (key, target, event) of ``step``, encoded, for the monitor's tap of the
        edge out of ``step`` (events inside a chain never pass the router)."""
        self.sample = [step, output[0], [bytes(f) for f in codec.encode(output[2])]]
        self.tap = ""

    def setup(self) -> None:
        for m in self.members:
            m.step.setup()

    def teardown(self) -> None:
        """Every step's teardown; the first error is raised after all have run."""
        first = None
        for m in self.members:
            try:
                m.step.teardown()
            except Exception as exc:  # the others still tear down
                first = first or exc
        if first is not None:
            raise first


__all__ = ["FusedChain", "Member"]
