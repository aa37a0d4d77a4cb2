"""The router's state records: a `Batch` of events as it travels, what the router knows of each
worker (`WorkerState`) and of each step (`StepState`), and the check of a worker's outputs.

Plain data with a few methods; the router (flow/engine/router/) is the only writer.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from flow.engine.launcher import Handle
from flow.engine.restart import RestartState
from flow.errors import ProtocolError
from flow.graph.fusion import chain_pinned, chain_workers, plan
from flow.graph.model import Graph, StepSpec
from flow.wire import protocol as P
from flow.wire.shm import ref_size


@dataclass(slots=True)
class Batch:
    """Events that travel together: their ``n`` envelope items ``[key, path, target, sizes]``
    packed as the worker sent them (`flow.wire.protocol.pack_items`: the router forwards the bytes and
    reads them only to split the batch) and the message frames ``[blob, big...]`` holding their
    payloads. The router handles batches, not events: per-event work stays in the workers. A batch
    is split only to route explicitly targeted outputs, to isolate retried events, and to
    dead-letter one event."""

    packed: bytes
    n: int
    frames: list
    nbytes: int
    attempts: int = 0
    shm: tuple = ()                  # shared-memory references "name:nbytes" of its events
    blob: str = ""                   # the reference of its blob when that is in shared memory
                                     # (then frames[0] is empty; the reference is in `shm` too)

    def items(self) -> list:
        """The items, unpacked and checked (ProtocolError if malformed)."""
        return P.unpack_items(self.packed, self.n)

    def split(self, frames: list) -> list[Batch]:
        """One single-event batch per item (same attempts), each with its own in-memory blob;
        ``frames``: this batch's frames with a shared-memory blob resolved (Router.frames_of)."""
        items = self.items()
        payloads = P.unpack_payloads([it[-1] for it in items], frames)
        out = []
        for it, parts in zip(items, payloads, strict=False):
            refs = tuple(p for p in parts if type(p) is str)
            out.append(Batch(P.pack_items([it]), 1, P.repack([(parts, it[-1])]),
                             _parts_size(parts), self.attempts, refs))
        return out

    def event_frames(self, index: int, frames: list) -> list:
        """The frames of event ``index`` (without its shared-memory references); ``frames`` as
        for `split`."""
        parts = P.unpack_payloads([it[-1] for it in self.items()], frames)[index]
        return [p for p in parts if type(p) is not str]


def _parts_size(parts) -> int:
    return sum(ref_size(p) if type(p) is str else len(p) for p in parts)


@dataclass
class WorkerState:
    """What the router knows of one worker."""

    id: bytes
    step: str
    handle: Handle | None = None
    pid: int = 0
    host: str = ""
    state: str = "starting"          # starting, ready, retiring, eos, dying, done, dead
    leases: dict = field(default_factory=dict)     # lease id -> (Batch, t0)
    last_seen: float = field(default_factory=time.monotonic)
    started_t: float = field(default_factory=time.monotonic)   # when it was started (or said HELLO)
    last_sent: float = 0.0           # when the router last sent to it (heartbeats fill gaps)
    exited_at: float = 0.0           # when its process was seen gone (state "dying")
    died_state: str = ""             # its state then
    credit_out: int = 0              # producers: CREDIT granted and not yet used
    done: int = 0
    errors: int = 0
    cpu: float = 0.0
    rss: int = 0


def outputs_of(env: dict) -> tuple:
    """(packed items, count, items or None) of a PRODUCE or ACK: the items are read (and checked)
    only when some output was routed explicitly, and the router then splits the batch by target;
    otherwise only their framing is checked (`check_packed`). ProtocolError if malformed."""
    packed, n, routed = env.get("out", b""), env.get("n", 0), env.get("routed", False)
    if type(routed) is not bool:   # packed and n are checked by unpack_items / check_packed
        raise ProtocolError("malformed outputs: routed is not a bool")
    if routed:
        return packed, n, P.unpack_items(packed, n)
    P.check_packed(packed, n)
    return packed, n, None


def holds_retry(w: WorkerState) -> bool:
    return any(batch.attempts for batch, _ in w.leases.values())


@dataclass
class StepState:
    """A step's queue, workers and counters."""

    spec: StepSpec
    index: int
    targets: tuple[str, ...]
    inputs: set
    queue: collections.deque = field(default_factory=collections.deque)   # of Batch
    queue_events: int = 0
    queue_bytes: int = 0
    workers: dict = field(default_factory=dict)    # id -> WorkerState
    desired: int = 1
    min_workers: int = 1
    max_workers: int = 1
    finished: bool = False           # no more input will come and nothing is left
    closed: bool = False             # all workers said BYE after finishing
    n_in: int = 0
    n_out: int = 0
    n_done: int = 0
    n_dups: int = 0
    errors: int = 0
    retries: int = 0
    dead: int = 0
    busy_s: float = 0.0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))
    spawned: int = 0                 # workers started so far (a consumer after the first replaces one)
    restart: RestartState = field(default_factory=RestartState)   # flow/engine/restart.py
    restarts: int = 0                # workers replaced after a loss
    pending: int = 0                 # replacements decided, waiting for their back-off
    replayable: bool = False         # a producer that said so in its READY
    resume_from: int = 0             # a producer: position after the last event accepted from it
    # fusion (flow/graph/fusion.py): the first step of a fused chain is the unit the router leases,
    # retries and scales; it lists the chain (itself first) in ``members``. The other steps of the
    # chain keep their own counters and point at that unit; they never have queue or workers.
    members: tuple = ()              # of StepState, on a chain's first step
    unit: StepState | None = None    # on the other steps of a chain: its first step
    unit_busy_s: float = 0.0         # on a chain's first step: busy seconds of its leases (all steps,
                                     # decoding and encoding included)
    pinned: bool = False

    @property
    def group(self) -> str:
        """The name of this step's fused chain (its first step), "" when it runs on its own."""
        return self.unit.spec.name if self.unit is not None else \
            self.spec.name if self.members else ""

    @property
    def kind(self) -> str:
        return self.spec.kind

    def leased(self) -> int:
        return sum(b.n for w in self.workers.values() for b, _ in w.leases.values())

    def push(self, batch: Batch, front: bool = False) -> None:
        (self.queue.appendleft if front else self.queue.append)(batch)
        self.queue_events += batch.n
        self.queue_bytes += batch.nbytes

    def pop(self) -> Batch:
        batch = self.queue.popleft()
        self.queue_events -= batch.n
        self.queue_bytes -= batch.nbytes
        return batch


def build_steps(graph: Graph) -> dict[str, StepState]:
    """The router's step states for ``graph``, with its fused chains (`flow.graph.fusion.plan`):
    a chain's first step takes the chain's targets, worker bounds and pinning, and the edges into
    the chain's successors come from it; the chain's other steps are counters only."""
    steps: dict[str, StepState] = {}
    for i, spec in enumerate(graph.steps):
        st = StepState(spec=spec, index=i, targets=tuple(spec.to),
                       inputs=set(graph.inputs(spec.name)), pinned=bool(spec.pinned))
        if spec.kind == "stager":
            st.min_workers, st.max_workers = spec.workers.min, spec.workers.max
            st.desired = spec.workers.min
        steps[spec.name] = st
    for chain in plan(graph):
        head, tail = steps[chain.head], steps[chain.tail]
        head.members = tuple(steps[n] for n in chain.steps)
        w = chain_workers(graph, chain)
        head.min_workers, head.max_workers, head.desired = w.min, w.max, w.min
        head.targets, head.pinned = tail.targets, chain_pinned(graph, chain)
        for m in head.members[1:]:
            m.unit, m.inputs, m.desired = head, set(), 0
        for t in tail.targets:
            steps[t].inputs.discard(tail.spec.name)
            steps[t].inputs.add(head.spec.name)
    return steps


def chain_config(st: StepState, use_specs: dict, max_retries: int) -> dict:
    """The ``chain`` of a fused unit's CONFIG (docs/protocol.md): each step's name, code,
    parameters, index and targets, in order, and the retries an event gets."""
    return {"max_retries": max_retries,
            "steps": [{"step": m.spec.name, "index": m.index, "targets": list(m.targets),
                       "use": use_specs.get(m.spec.name,
                                            m.spec.use if isinstance(m.spec.use, str) else ""),
                       "params": dict(m.spec.params)} for m in st.members]}


def check_chain_counts(counts, n_members: int) -> list:
    """A fused ACK's per-step counters ``[[n_in, done, n_out, busy_s], ...]`` (one per step of the
    chain), checked; ProtocolError if malformed."""
    if type(counts) is not list or len(counts) != n_members or not all(
            type(c) is list and len(c) == 4 and all(type(v) is int and v >= 0 for v in c[:3])
            and type(c[3]) in (int, float) for c in counts):
        raise ProtocolError("malformed per-step counters in a fused ACK")
    return counts


def check_chain_failures(failed: list, st: StepState) -> None:
    """The failures of a fused ACK: ``[index, error, traceback]``, plus the step of the chain that
    raised (``[..., step]``) and, on an event's last attempt, that step's input
    (``[..., step, key, path, frames]``); ProtocolError if malformed."""
    names = {m.spec.name for m in st.members}
    for e in failed:
        if len(e) > 3 and not names:
            raise ProtocolError("an ACK of a step that is not fused names a failing step")
        if len(e) > 3 and (type(e[3]) is not str or e[3] not in names):
            raise ProtocolError("a fused ACK names a failing step outside its chain")
        if len(e) == 7 and not (type(e[4]) is str and type(e[5]) is str and type(e[6]) is list
                                and all(type(f) is bytes for f in e[6])):
            raise ProtocolError("malformed failing input in a fused ACK")


def unit_of(st: StepState) -> StepState:
    """The step state that holds ``st``'s workers and queue (its chain's first step if fused)."""
    return st.unit if st.unit is not None else st


__all__ = ["Batch", "StepState", "WorkerState", "build_steps", "chain_config",
           "check_chain_counts", "check_chain_failures", "holds_retry", "outputs_of", "unit_of"]
