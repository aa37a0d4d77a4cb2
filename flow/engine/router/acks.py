"""ACK handling: a PRODUCE or an ACK is checked whole before anything changes, its lease released,
its outputs queued at the downstream steps in one step, and failed events retried alone or
dead-lettered after ``max_retries``.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Writes the step counters (``n_in``, ``n_out``, ``n_done``, ``errors``, ``retries``, ``dead``) and
queues; releases leases; writes the dead-letter file.
"""

from __future__ import annotations

import logging
import time

from flow.engine.router.state import (
    Batch,
    StepState,
    WorkerState,
    check_chain_counts,
    check_chain_failures,
    outputs_of,
)
from flow.errors import ProtocolError
from flow.wire import protocol as P
from flow.wire.shm import ref_name, ref_size

log = logging.getLogger("flow.router")
SAMPLE_SHM_MAX = 64 << 20  # a sampled event whose shared-memory arrays exceed this is not sampled


class AckHandling:
    """ACK handling of the router (see the module docstring)."""

    def on_produce(self, w: WorkerState, msg: P.Message) -> None:
        st = self.steps[w.step]
        out = outputs_of(msg.envelope)
        if w.state == "dead":       # a late message of a producer already replaced
            self.stale_acks += 1
            return
        pos = msg.envelope.get("pos", st.resume_from)
        if type(pos) is not int or pos < st.resume_from:
            raise ProtocolError("malformed pos in PRODUCE")
        refs = self._refs(msg)
        self.check_pins(msg.envelope)   # the producer's open arena (flow/wire/shm.py arena_pins)
        st.resume_from = pos        # a replacement resumes after this event
        w.credit_out = max(0, w.credit_out - 1)
        n = self.enqueue_outputs(st, out, msg.frames, *refs)
        self.pin(w, msg.envelope)
        w.done += n
        st.n_out += n
        self.produced += n
        self.last_event_t = time.monotonic()

    def on_ack(self, w: WorkerState, msg: P.Message) -> None:
        lease_id = msg.envelope.get("lease")
        if type(lease_id) is not int or lease_id not in w.leases:
            self.stale_acks += 1
            return
        st = self.steps[w.step]
        try:   # check everything before anything changes: a malformed ACK loses nothing
            out, failed, refs, blob, busy, dups = self._check_ack(msg, w.leases[lease_id][0].n)
            chain_counts = check_chain_counts(msg.envelope.get("steps"), len(st.members)) \
                if st.members else None
            check_chain_failures(failed, st)
        except ProtocolError as exc:
            batch, _ = w.leases.pop(lease_id)
            self._fail_lease(st, batch, f"malformed ACK from worker {w.id.decode(errors='replace')}: "
                                        f"{exc}")
            raise
        batch, t0 = w.leases.pop(lease_id)
        n = batch.n
        if failed:
            try:
                singles = self.split(batch)
            except ProtocolError as exc:  # malformed payload sizes: keep the raw batch, once
                self.dead_letter_batch(st, batch, f"ProtocolError: {exc}")
                failed = []
            for index, exc, tb, *where in failed:
                self.retry_or_dead_letter(st, singles[index], str(exc), str(tb), where)
        ok = n - len(failed)
        w.done += ok
        w.errors += len(failed)
        if st.kind == "consumer":
            st.n_dups += dups
        queued = self.enqueue_outputs(st, out, msg.frames, refs, blob)
        if st.members:
            self.account_chain(st, chain_counts, queued, busy)
            if "sample" in msg.envelope:
                self.publish_chain_sample(st, msg.envelope["sample"])
        else:
            st.n_done += ok
            st.busy_s += busy
            if n:
                st.latencies.extend([busy / n] * min(n, 16))
            st.n_out += queued
        self.pin(w, msg.envelope)       # before the lease's segments are released
        self.hold(batch, -1)
        self.last_event_t = time.monotonic()
        if not st.inputs:   # the stream's tail: the step may now be finished
            self._eos_due = True
        if w.state == "retiring" and not w.leases:
            self._send(w, P.STOP, {"teardown": True})

    def account_chain(self, st: StepState, counts: list, queued: int, busy: float) -> None:
        """A fused lease's per-step counters go to each step of the chain; what its last step
        sent on is what was queued downstream; the lease's whole busy time (decoding, every step,
        encoding) is the chain's (``unit_busy_s``, what scaling reads)."""
        last = st.members[-1]
        for m, (n_in, done, n_out, step_busy) in zip(st.members, counts, strict=True):
            if m is not st:
                m.n_in += n_in
            m.n_done += done
            m.busy_s += step_busy
            if m is not last:
                m.n_out += n_out
            if done:
                m.latencies.extend([step_busy / done] * min(done, 16))
        last.n_out += queued
        st.unit_busy_s += busy

    def _check_ack(self, msg: P.Message, n: int) -> tuple:
        """(outputs, failures, shm references, blob, busy_s, dups) of an ACK for ``n`` events;
        ProtocolError if any of it is malformed."""
        env = msg.envelope
        out = outputs_of(env)
        failed = env.get("failed", [])
        if type(failed) is not list or not all(
                type(e) is list and len(e) in (3, 4, 7) and type(e[0]) is int and 0 <= e[0] < n
                for e in failed):
            raise ProtocolError("malformed failure list in ACK")
        busy, dups = env.get("busy_s", 0.0), env.get("dups", 0)
        if type(busy) not in (int, float) or type(dups) is not int:
            raise ProtocolError("malformed busy_s or dups in ACK")
        refs, blob = self._refs(msg)
        self.check_pins(env)
        return out, failed, refs, blob, float(busy), dups

    def _fail_lease(self, st: StepState, batch: Batch, reason: str) -> None:
        """A lease that ended badly (its worker died, or answered with garbage): each of its
        events is retried alone, or dead-lettered after max_retries."""
        try:
            singles = self.split(batch)
        except ProtocolError as exc:
            self.dead_letter_batch(st, batch, f"ProtocolError: {exc}")
            self.hold(batch, -1)
            return
        for single in reversed(singles):
            self.retry_or_dead_letter(st, single, reason, "")
        self.hold(batch, -1)

    def enqueue_outputs(self, src: StepState, out: tuple, frames: list, shm=(),
                        blob: str = "") -> int:
        """Queue a worker's outputs (see `flow.engine.router.state.outputs_of`) at the downstream steps: the whole batch to
        every target when nothing was routed explicitly (the common case: its items are not even
        read here), else per target."""
        packed, n, items = out
        if not n:
            if blob:
                self.ledger.release_if_unused(ref_name(blob))
            return 0
        kept = blob    # the whole batch goes on with its shared-memory blob, unless split
        if items is None:
            refs = tuple(shm) if shm else ()
            nbytes = sum(len(f) for f in frames) + sum(map(ref_size, refs))
            routes = [(t, packed, n, frames, nbytes, refs) for t in src.targets]
        else:   # per-target batches get in-memory blobs; a shared-memory one is let go after
            payloads = P.unpack_payloads([it[3] for it in items], self._resolve(frames, blob))
            groups: dict[str, list] = {}
            for it, parts in zip(items, payloads, strict=False):
                for t in (src.targets if not it[2] else (it[2],)):
                    if t in src.targets:
                        groups.setdefault(t, []).append((it, parts))
                    else:
                        self.rejected += 1
            routes = []
            for t, group in groups.items():
                fr = P.repack((parts, it[3]) for it, parts in group)
                refs = tuple(p for _, parts in group for p in parts if type(p) is str)
                routes.append((t, P.pack_items([it for it, _ in group]), len(group), fr,
                               sum(len(f) for f in fr) + sum(map(ref_size, refs)), refs))
            payloads = None
            kept = ""
        for t, pk, k, fr, nbytes, refs in routes:
            batch = Batch(pk, k, fr, nbytes, 0, refs, kept)
            if self.taps:
                self._maybe_sample(src.members[-1] if src.members else src, t, batch)
            dst = self.steps[t]
            self.hold(batch, +1)
            dst.push(batch)
            dst.n_in += k
        if blob and not (kept and routes):   # copied out, or routed nowhere
            self.ledger.release_if_unused(ref_name(blob))
        return n

    def retry_or_dead_letter(self, st: StepState, single: Batch, exc: str, tb: str,
                             where: list | tuple = ()) -> None:
        """A single-event batch failed: queue it again (alone, at the front) or dead-letter it.
        In a fused chain ``where`` names the step that raised (it is charged, and named in the
        dead letter) and, on the last attempt, that step's input: ``[step, key, path, frames]``."""
        single.attempts += 1
        failing = self.steps[where[0]] if where else st
        failing.errors += 1
        if single.attempts < self.opts.max_retries:
            failing.retries += 1
            self.hold(single, +1)
            st.push(single, front=True)
        elif len(where) == 4:   # the failing step's own input, snapshot by the fused worker
            failing.dead += 1
            step, key, path, frames = where
            self.dead_letter.write(key, path, step, exc, tb, single.attempts, frames)
            log.warning("dead letter: step '%s' (fused in '%s') key %s after %d attempts: %s",
                        step, st.spec.name, key, single.attempts, exc)
        else:
            failing.dead += 1
            key, path = single.items()[0][:2]
            segments = {ref_name(r): self.shm_store.read(ref_name(r)) for r in single.shm}
            self.dead_letter.write(key, path, failing.spec.name if failing is st or not where
                                   else st.spec.name, exc, tb, single.attempts,
                                   single.event_frames(0, self.frames_of(single)), segments)
            log.warning("dead letter: step '%s' key %s after %d attempts: %s",
                        st.spec.name, key, single.attempts, exc)

    def dead_letter_batch(self, st: StepState, batch: Batch, exc: str) -> None:
        """Dead-letter every event of a batch whose payload cannot be split (raw frames kept);
        events whose items cannot be read either are named ``?<index>``."""
        try:
            ids = [(it[0], it[1]) for it in batch.items()]
        except ProtocolError:
            ids = [(f"?{i}", "") for i in range(batch.n)]
        for key, path in ids:
            st.dead += 1
            self.dead_letter.write(key, path, st.spec.name, exc, "", batch.attempts + 1,
                                   [bytes(f) for f in self.frames_of(batch)])
        log.warning("dead letter: step '%s': %d events of a malformed batch: %s",
                    st.spec.name, batch.n, exc)

    @property
    def taps(self):
        return self.publisher.taps if self.publisher is not None else None

    def chain_tap(self, st: StepState) -> str:
        """The step of a fused chain whose edge to the next step is tapped and due for a sample
        ("" if none): its worker then sends one output of that step with the ACK."""
        for m, nxt in zip(st.members, st.members[1:], strict=False):
            if self.publisher.sample_due(m.spec.name, nxt.spec.name):
                return m.spec.name
        return ""

    def publish_chain_sample(self, st: StepState, sample) -> None:
        """Publish the sample a fused worker took inside its chain (``[step, key, frames]``)."""
        names = [m.spec.name for m in st.members]
        if self.publisher is None or type(sample) is not list or len(sample) != 3 \
                or sample[0] not in names[:-1] or type(sample[1]) is not str \
                or type(sample[2]) is not list or not all(type(f) is bytes for f in sample[2]):
            return   # not ours to check further: a sample is for display only
        step, key, frames = sample
        self.publisher.send_sample(step, names[names.index(step) + 1], key, frames)

    def _maybe_sample(self, src: StepState, t: str, batch: Batch) -> None:
        if self.publisher.sample_due(src.spec.name, t):
            items = batch.items()
            first = P.unpack_payloads([it[-1] for it in items], self.frames_of(batch))[0]
            refs = [p for p in first if type(p) is str]
            if sum(map(ref_size, refs)) > SAMPLE_SHM_MAX:
                return
            segments = {ref_name(r): self.shm_store.read(ref_name(r)) for r in refs}
            self.publisher.send_sample(src.spec.name, t, items[0][0],       # copied: the blob
                                       [bytes(p) for p in first if type(p) is not str], segments)
