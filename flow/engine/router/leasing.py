"""Credit and leasing: producers get CREDIT while their targets have room (backpressure), queued
batches go to free workers under a lease (merged while the queue is deep), and a lost worker's
leases go back to the front of the queue.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Reads the step queues and each worker's ``leases``; writes ``leases`` and ``credit_out``.
"""

from __future__ import annotations

import math
import time

from flow.engine.router.state import Batch, StepState, WorkerState, holds_retry
from flow.wire import protocol as P

FIRST_LEASE = 16    # events per lease of a step before its first ACK tells what an event costs


class CreditAndLeasing:
    """Credit and leasing of the router (see the module docstring)."""

    def room(self, st: StepState) -> bool:
        return st.queue_events < self.opts.queue_limit and \
            st.queue_bytes < self.opts.queue_limit_bytes

    def targets_have_room(self, st: StepState) -> bool:
        return all(self.room(self.steps[t]) for t in st.targets)

    def dispatch(self) -> None:
        prefetch = self.opts.prefetch
        for st in self.steps.values():
            if st.kind == "producer":
                if self.paused or st.finished or not self.targets_have_room(st):
                    continue
                batch = 0    # the targets' lease size, worked out once a credit is due
                for w in st.workers.values():
                    if w.state == "ready" and w.credit_out < prefetch:
                        batch = batch or min((self.lease_size(self.steps[t]) for t in st.targets),
                                             default=self.opts.batch_max)
                        n = prefetch - w.credit_out
                        w.credit_out += n
                        self._send(w, P.CREDIT, {"n": n, "batch": batch})
                continue
            if not st.queue or not self.targets_have_room(st):
                continue
            free = [w for w in st.workers.values() if w.state == "ready"
                    and len(w.leases) < prefetch and not holds_retry(w)]
            if not free:
                continue
            free.sort(key=lambda w: len(w.leases))
            while st.queue and free:
                for w in list(free):
                    if not st.queue:
                        break
                    if st.queue[0].attempts and w.leases:
                        free.remove(w)   # a retried event waits for an idle worker
                        continue
                    batch = self.lease(st, w, len(free))
                    if len(w.leases) >= prefetch or batch.attempts:
                        free.remove(w)

    def lease_size(self, st: StepState) -> int:
        """Events per lease of ``st`` (or of the fused chain it starts): about ``lease_s`` of its
        work at its mean busy seconds per event so far, at most ``batch_max``; `FIRST_LEASE`
        before its first ACK; no more than its targets take. A slow step's batches stay small, so
        its workers share the work evenly up to the end of the stream, and a lost worker leaves
        little to redo."""
        unit = st.unit or st
        busy = unit.unit_busy_s if unit.members else unit.busy_s
        if unit.n_done <= 0 or busy <= 0:
            own = min(FIRST_LEASE, self.opts.batch_max)
        else:
            own = max(1, min(self.opts.batch_max, int(self.opts.lease_s * unit.n_done / busy)))
        # a lease's outputs travel on as one batch, and the next step leases at least one batch:
        # no larger than what the steps downstream take
        return min([own] + [self.lease_size(self.steps[t]) for t in unit.targets])

    def lease(self, st: StepState, w: WorkerState, n_free: int) -> Batch:
        """Send queued batches to ``w`` under one lease: at least one batch, more (merged) while
        the queue is deep, up to ``batch_max`` events and 8 MB. A retried event travels alone, to
        an idle worker that gets nothing else until it answers: if that worker dies, the retried
        event is the only suspect (an ACK sent just before a crash can be lost with the process,
        so "the oldest lease" alone could blame an innocent neighbour)."""
        q = st.queue
        want = max(1, min(self.lease_size(st), math.ceil(st.queue_events / max(1, n_free * 2))))
        batch = st.pop()
        if not batch.attempts:
            parts = [batch]
            n, nbytes = batch.n, batch.nbytes
            while q and not q[0].attempts and n + q[0].n <= want \
                    and nbytes + q[0].nbytes < (8 << 20) and not batch.blob and not q[0].blob:
                nxt = st.pop()
                parts.append(nxt)
                n += nxt.n
                nbytes += nxt.nbytes
            if len(parts) > 1:
                blobs = [b.frames[0] for b in parts]
                bigs = [f for b in parts for f in b.frames[1:]]
                batch = Batch(b"".join([b.packed for b in parts]), n, [b"".join(blobs), *bigs],
                              nbytes, 0, tuple(r for b in parts for r in b.shm))
        lease_id = next(self.lease_ids)
        w.leases[lease_id] = (batch, time.monotonic())
        env = {"lease": lease_id, "items": batch.packed, "n": batch.n}
        if batch.attempts:   # a fused chain snapshots each step's input on an event's last attempt
            env["attempt"] = batch.attempts
        if st.members and self.taps:   # an edge inside a fused chain is sampled by its worker
            tap = self.chain_tap(st)
            if tap:
                env["tap"] = tap
        if batch.blob:
            env["blob"] = batch.blob
        self._send(w, P.DATA, env, batch.frames)
        return batch

    def requeue(self, w: WorkerState, count_attempt: bool, reason: str = "") -> None:
        st = self.steps[w.step]
        # a worker handles its leases in order: only the oldest can have killed it
        leases = list(w.leases.values())
        w.leases.clear()
        for i, (batch, _) in enumerate(reversed(leases)):
            if count_attempt and i == len(leases) - 1:
                self._fail_lease(st, batch, reason)
            else:
                st.push(batch, front=True)
