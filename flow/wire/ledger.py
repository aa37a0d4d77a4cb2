"""The router's account of shared-memory segments (see flow/wire/shm.py): who still needs each one.

A segment is needed while a queued or leased batch references it (``hold``) or a worker still maps
it after its lease (``pin``, reported in ACKs, let go with ``unpin``). When neither is true it is
released: handed back to the process that created it for reuse, or unlinked when that process is
gone. No sockets here: the router feeds it what the messages say.
"""

from __future__ import annotations

from collections.abc import Iterable

from flow.errors import ProtocolError
from flow.wire.shm import ShmStore, creator_pid, ref_name


class SegmentLedger:
    """Reference counts and pins per segment name, for one run's `ShmStore`."""

    def __init__(self, store: ShmStore):
        self.store = store
        self.refs: dict[str, int] = {}          # segment -> batches referencing it
        self.pins: dict[str, set] = {}          # segment -> workers that still map it
        self.gone: set[int] = set()             # pids of workers that have exited

    def hold(self, refs: Iterable[str], k: int) -> None:
        """Count (k=+1) or uncount (k=-1) one batch's references ``name:nbytes``."""
        for ref in refs:
            name = ref_name(ref)
            n = self.refs.get(name, 0) + k
            if n > 0:
                self.refs[name] = n
            else:
                self.refs.pop(name, None)
                if name not in self.pins:
                    self.release(name)

    def check(self, env: dict) -> None:
        """ProtocolError unless the ``pins``/``unpins`` of a worker's message are this run's names."""
        for key in ("pins", "unpins"):
            names = env.get(key)
            if names is not None and (type(names) is not list or not all(
                    type(n) is str and n.startswith(self.store.prefix) for n in names)):
                raise ProtocolError(f"malformed shared-memory {key}")

    def pin(self, worker: bytes, env: dict) -> None:
        """Apply a worker's report: segments it still maps (``pins``), and let go (``unpins``)."""
        pins, unpins = env.get("pins"), env.get("unpins")
        if pins is None and unpins is None:
            return
        self.check(env)
        for name in pins or ():
            self.pins.setdefault(name, set()).add(worker)
        for name in unpins or ():
            self.unpin(name, worker)

    def unpin(self, name: str, worker: bytes) -> None:
        holders = self.pins.get(name)
        if holders is None:
            return
        holders.discard(worker)
        if not holders:
            del self.pins[name]
            if name not in self.refs:
                self.release(name)

    def worker_gone(self, worker: bytes, pid: int) -> None:
        """A worker exited: its mappings went with it, and nobody will take its pooled segments."""
        if pid:
            self.gone.add(pid)
        for name in [n for n, holders in self.pins.items() if worker in holders]:
            self.unpin(name, worker)
        if pid:
            self.store.release_pool_of(pid)

    def release_if_unused(self, name: str) -> None:
        if name not in self.refs and name not in self.pins:
            self.release(name)

    def release(self, name: str) -> None:
        """Hand a segment back to its creator, or unlink it if that process is gone."""
        self.store.release(name, unlink=creator_pid(name, self.store.prefix) in self.gone)

    def clear(self) -> None:
        self.refs.clear()
        self.pins.clear()


__all__ = ["SegmentLedger"]
