"""Shared-memory references: the segments a queued or leased batch holds (counted in the
`SegmentLedger`), the pins and unpins workers report, and the checks of the references a
message carries.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Uses ``self.shm_store`` and ``self.ledger`` (both None when shared memory is off).
"""

from __future__ import annotations

from flow.engine.router.state import Batch, WorkerState
from flow.errors import ProtocolError
from flow.wire import protocol as P
from flow.wire.shm import ref_name, ref_size


class SharedMemoryRefs:
    """Shared-memory references of the router (see the module docstring)."""

    def frames_of(self, batch: Batch) -> list:
        """A batch's frames, its blob mapped from shared memory when it lives there."""
        return self._resolve(batch.frames, batch.blob)

    def _resolve(self, frames: list, blob: str) -> list:
        if not blob:
            return frames
        view = self.shm_store.attach(ref_name(blob))
        n = ref_size(blob)
        if n > len(view):
            raise ProtocolError("shared-memory blob beyond its segment")
        return [view[:n], *frames[1:]]

    def split(self, batch: Batch) -> list[Batch]:
        """A batch as single-event batches (for retries and dead letters) with in-memory blobs;
        a one-event batch stays as it is unless its blob is in shared memory."""
        if batch.n == 1 and not batch.blob:
            return [batch]
        return batch.split(self.frames_of(batch))

    def hold(self, batch: Batch, k: int) -> None:
        """Count (k=+1) or release (k=-1) a queued or leased batch's shared-memory segments."""
        if batch.shm:
            self.ledger.hold(batch.shm, k)

    def check_pins(self, env: dict) -> None:
        """ProtocolError unless a message's ``pins``/``unpins`` are well formed and expected."""
        if self.ledger is not None:
            self.ledger.check(env)
        elif env.get("pins") or env.get("unpins"):
            raise ProtocolError("shared-memory pins where none is used")

    def pin(self, w: WorkerState, env: dict) -> None:
        """Apply a worker's pins (the ledger checks them); see `flow.wire.ledger`."""
        if self.ledger is not None:
            self.ledger.pin(w.id, env)
        else:
            self.check_pins(env)

    def unpin_all(self, w: WorkerState) -> None:
        if self.ledger is not None:
            self.ledger.worker_gone(w.id, w.pid)   # shared memory: local workers only

    def _refs(self, msg: P.Message) -> tuple[tuple, str]:
        """(shared-memory references, blob reference or "") of a PRODUCE or ACK, checked."""
        refs = msg.envelope.get("shm")
        if refs is None:
            return (), ""
        if self.shm_store is None or type(refs) is not list or \
                not all(type(r) is str and r.startswith(self.shm_store.prefix) for r in refs):
            raise ProtocolError("unexpected shared-memory references")
        blob = msg.envelope.get("blob", "")
        if blob and (blob not in refs or not msg.frames or len(msg.frames[0]) != 0):
            raise ProtocolError("malformed shared-memory blob reference")
        return tuple(refs), blob
