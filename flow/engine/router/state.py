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
from flow.graph.model import StepSpec
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


__all__ = ["Batch", "StepState", "WorkerState", "holds_retry", "outputs_of"]
