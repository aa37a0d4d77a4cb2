"""The router: one poll loop that leases events to workers, collects their ACKs, and ends the stream.

Small state records (`Batch`, `WorkerState`, `StepState`, in flow/state.py) and one loop that always
has a timeout, as in the ZeroMQ guide's brokers. The router reads only envelopes; payload frames are
forwarded untouched.
See docs/protocol.md for the semantics implemented here (credit windows, leases, retries and
dead letters, backpressure, deterministic end of stream).
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable

import zmq

from . import protocol as P
from .deadletter import DeadLetterFile
from .errors import ProtocolError, RunError, StepError
from .graph import Graph
from .launcher import LocalLauncher
from .ledger import SegmentLedger
from .memory import tune_gc, tune_malloc
from .shm import ShmStore, ref_name, ref_size, shm_free_bytes
from .state import Batch, StepState, WorkerState, holds_retry, outputs_of

log = logging.getLogger("flow.router")

EXIT_GRACE_S = 0.25  # after a worker's process exits, time for its last messages to arrive
SAMPLE_SHM_MAX = 64 << 20  # a sampled event whose shared-memory arrays exceed this is not sampled


class Router:
    """Runs one graph to completion over the workers a launcher starts.

    ``context_frames`` are the encoded producers' context sent to every worker in its CONFIG.
    ``on_tick(router)`` is called about every ``stats_interval_s`` (statistics, scaling, views).
    """

    def __init__(self, graph: Graph, endpoint: str, context_frames: list | None = None,
                 launcher=None, dead_letter: DeadLetterFile | None = None,
                 on_tick: Callable[[Router], None] | None = None,
                 ctx: zmq.Context | None = None, keys_dir: str | None = None,
                 use_specs: dict[str, str] | None = None):
        self.graph = graph
        self.opts = graph.router
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDTIMEO, 1000)   # a peer that stopped reading cannot stall us
        self.sock.setsockopt(zmq.LINGER, 0)
        self.security = None
        if keys_dir:
            from .security import ServerSecurity
            self.security = ServerSecurity(keys_dir, self.ctx)
            self.security.apply_server(self.sock)
        if endpoint.endswith(":0") or endpoint.endswith(":*"):
            base = endpoint.rsplit(":", 1)[0]
            port = self.sock.bind_to_random_port(base)
            endpoint = f"{base}:{port}"
        else:
            self.sock.bind(endpoint)
        self.endpoint = endpoint
        self.context_frames = context_frames or []
        self.launcher = launcher or LocalLauncher(endpoint, keys_dir=keys_dir, graph=graph)
        self.dead_letter = dead_letter or DeadLetterFile(self.opts.dead_letter)
        self.on_tick = on_tick
        self.use_specs = use_specs or {}
        self.publisher = None
        self.agents: set[bytes] = set()
        self.shm_store: ShmStore | None = None    # set by enable_shm
        self.ledger: SegmentLedger | None = None  # who still needs each segment
        self.extra_sockets: dict = {}
        self.steps: dict[str, StepState] = {}
        for i, spec in enumerate(graph.steps):
            st = StepState(spec=spec, index=i, targets=tuple(spec.to),
                           inputs=set(graph.inputs(spec.name)))
            if spec.kind == "stager":
                st.min_workers, st.max_workers = spec.workers.min, spec.workers.max
                st.desired = spec.workers.min
            self.steps[spec.name] = st
        self.workers: dict[bytes, WorkerState] = {}
        self.lease_ids = iter(range(1, 1 << 62))
        self.started_at = time.monotonic()
        self.wall_start = time.time()
        self.rejected = 0
        self.stale_acks = 0
        self.produced = 0
        self.state = "starting"
        self.paused = False
        self.failure: Exception | None = None
        self.step_failures: list[str] = []
        self.workers_started = 0
        self.workers_retired = 0
        self.last_event_t = 0.0
        self.finished_t = 0.0
        self._draining = False
        self.signal_count = 0
        self._signals_seen = 0
        self._aborting_t = 0.0
        self._next_tick = time.monotonic()
        self._next_check = time.monotonic()

    def enable_shm(self, prefix: str, threshold: int) -> None:
        """Large arrays travel through shared memory (flow/shm.py); only for local workers."""
        self.shm_store = ShmStore(prefix, threshold)
        self.shm_store.cleanup()
        self.ledger = SegmentLedger(self.shm_store)
        # each process may keep this much of /dev/shm pooled: about what can be in flight, and
        # never more than a quarter of what is free (a container's /dev/shm can be small)
        self.shm_pool_bytes = min(2 * self.opts.queue_limit_bytes + (64 << 20),
                                  shm_free_bytes() // 4)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for st in self.steps.values():
            n = 1 if st.kind != "stager" else st.desired
            for _ in range(n):
                self.spawn(st)
        self.state = "running"

    def spawn(self, st: StepState) -> WorkerState:
        handle = self.launcher.start(st.spec.name)
        w = WorkerState(id=handle.worker_id.encode(), step=st.spec.name, handle=handle)
        st.spawned += 1
        self.workers[w.id] = w
        st.workers[w.id] = w
        self.workers_started += 1
        return w

    def run(self, poll_ms: int = 50) -> None:
        """Loop until every consumer has closed (or the run is aborted)."""
        tune_malloc()
        gc_threshold, gc_frozen = gc.get_threshold(), gc.get_freeze_count()
        tune_gc()    # restored when the run ends: the router may run inside a user's process
        if not self.workers:
            self.start()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        for s in self.extra_sockets:
            poller.register(s, zmq.POLLIN)
        try:
            while not self.done():
                ready = dict(poller.poll(poll_ms))
                if self.sock in ready:
                    self.drain_socket()
                for s, handler in self.extra_sockets.items():
                    if s in ready:
                        handler(s)
                self.dispatch()
                if self.signal_count != self._signals_seen:
                    self._signals_seen = self.signal_count
                    self.abort() if self.signal_count > 1 else self.drain()
                now = time.monotonic()
                if now >= self._next_check:
                    self._next_check = now + min(0.1, self.opts.heartbeat_s / 2)
                    self.check_workers(now)
                    self.advance_eos()
                if now >= self._next_tick:
                    self._next_tick = now + self.opts.stats_interval_s
                    if self.on_tick:
                        self.on_tick(self)
                if self._aborting_t and now > self._aborting_t:
                    self.kill_all()
                    break
        finally:
            if not gc_frozen:      # (objects the caller had frozen stay frozen)
                gc.unfreeze()
            gc.set_threshold(*gc_threshold)
            self.finished_t = time.monotonic()
            if self.state not in ("aborted", "failed"):
                self.state = "failed" if self.failure is not None else \
                    "stopped" if self._draining else "finished"
            self.shutdown()

    def done(self) -> bool:
        if self.failure is not None and not self._aborting_t:
            self.abort()
        if self._aborting_t:
            return not any(w.state not in ("done", "dead") for w in self.workers.values())
        return all(st.closed for st in self.steps.values() if st.kind == "consumer")

    def shutdown(self) -> None:
        for w in self.workers.values():
            if w.handle is not None and w.state not in ("done", "dead"):
                self._send(w, P.STOP, {"abort": True})
        deadline = time.monotonic() + 2.0
        for w in self.workers.values():
            if w.handle is not None:
                w.handle.join(max(0.0, deadline - time.monotonic()))
                w.handle.kill()
        self.dead_letter.close()
        if self.shm_store is not None:
            self.shm_store.cleanup()
            self.ledger.clear()
        self.sock.close(0)
        if self.security is not None:
            self.security.stop()

    def drain(self) -> None:
        """Graceful stop: producers stop, in-flight events drain, consumers close their files."""
        if self._draining:
            return
        self._draining = True
        self.state = "draining"
        for st in self.steps.values():
            if st.kind == "producer" and not st.finished:
                for w in st.workers.values():
                    self._send(w, P.STOP, {})
                self.finish_step(st)

    def abort(self, grace_s: float = 1.5) -> None:
        """Hard stop: every worker is told to leave now. Consumers get up to ``grace_s`` to close
        their files; producers and stagers hold no output, so they are killed at once (a stager
        busy in a long lease would read its STOP only after it)."""
        self.state = "aborted" if self.failure is None else "failed"
        for w in self.workers.values():
            if w.state not in ("done", "dead"):
                self._send(w, P.STOP, {"abort": True})
                if self.steps[w.step].kind != "consumer" and w.handle is not None:
                    w.handle.kill()
        self._aborting_t = time.monotonic() + grace_s

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the producers (no new credit; in-flight events go on)."""
        self.paused = paused
        for st in self.steps.values():
            if st.kind == "producer":
                for w in st.workers.values():
                    self._send(w, P.PAUSE, {"paused": paused})

    def kill_all(self) -> None:
        for w in self.workers.values():
            if w.handle is not None:
                w.handle.kill()
            w.state = "dead"

    # -- receiving ---------------------------------------------------------------------------
    def drain_socket(self, budget: int = 256) -> None:
        for _ in range(budget):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                self.rejected += 1
                continue
            ident = frames[0].bytes
            try:
                msg = P.Message.from_frames(frames[1:])
                self.handle(ident, msg)
            except ProtocolError as exc:
                self.rejected += 1
                log.warning("rejected a message from %r: %s", ident[:32], exc)

    def handle(self, ident: bytes, msg: P.Message) -> None:
        w = self.workers.get(ident)
        if w is None and (msg.command == P.AGENT or ident in self.agents):
            # a remote host offering CPUs: the launcher decides what runs there
            self.agents.add(ident)
            self.launcher.on_agent_message(self, ident, msg)
            return
        if w is None:
            w = self.on_unknown(ident, msg)
            if w is None:
                return
        w.last_seen = time.monotonic()
        cmd = msg.command
        if cmd == P.ACK:
            self.on_ack(w, msg)
        elif cmd == P.PRODUCE:
            self.on_produce(w, msg)
        elif cmd == P.HEARTBEAT:
            pass
        elif cmd == P.STATS:
            env = msg.envelope
            try:
                w.cpu, w.rss = float(env.get("cpu", 0.0)), int(env.get("rss", 0))
            except (TypeError, ValueError):
                raise ProtocolError("malformed STATS") from None
            self.pin(w, env)
        elif cmd == P.HELLO:
            self.on_hello(w, msg)
        elif cmd == P.READY:
            self.steps[w.step].start_failures = 0
            if w.state == "retiring":  # retired while starting: its STOP may not have reached it
                self._send(w, P.STOP, {"teardown": True})
            else:
                w.state = "ready"
        elif cmd == P.EOS:
            st = self.steps[w.step]
            if st.kind == "producer":
                self._send(w, P.STOP, {})
                self.finish_step(st)
        elif cmd == P.BYE:
            self.on_bye(w, msg)
        elif cmd == P.FAILED:
            self.on_failed(w, msg)
        else:
            raise ProtocolError(f"unexpected {msg.name} from a worker")

    def on_unknown(self, ident: bytes, msg: P.Message) -> WorkerState | None:
        """A message from a peer the router did not start: only a HELLO for a known step is taken
        (agent-started workers); anything else (a worker retired or declared dead) is dropped."""
        if msg.command == P.HELLO and msg.envelope.get("step") in self.steps and not self._aborting_t:
            st = self.steps[msg.envelope["step"]]
            if st.kind == "stager" and not st.finished:
                w = WorkerState(id=ident, step=st.spec.name)
                self.workers[ident] = w
                st.workers[ident] = w
                return w
        if msg.command == P.ACK:
            self.stale_acks += 1
        if msg.command not in (P.HEARTBEAT, P.STATS, P.BYE):
            self._send_ident(ident, P.STOP, {"abort": True})
        return None

    def on_hello(self, w: WorkerState, msg: P.Message) -> None:
        st = self.steps[w.step]
        pid = msg.envelope.get("pid", 0)
        if type(pid) is not int:
            raise ProtocolError("malformed pid in HELLO")
        w.pid = pid
        w.host = str(msg.envelope.get("host", ""))
        spec = st.spec
        env = {"step": spec.name, "kind": spec.kind, "index": st.index,
               "use": self.use_specs.get(spec.name, spec.use if isinstance(spec.use, str) else ""),
               "params": dict(spec.params), "targets": list(st.targets),
               "heartbeat_s": self.opts.heartbeat_s, "liveness": self.opts.liveness,
               "batch_max": self.opts.batch_max, "replacement": st.spawned > 1,
               "shm": ({"prefix": self.shm_store.prefix, "threshold": self.shm_store.threshold,
                        "pool_bytes": self.shm_pool_bytes}
                       if self.shm_store is not None else None)}
        self._send(w, P.CONFIG, env, self.context_frames)

    def on_produce(self, w: WorkerState, msg: P.Message) -> None:
        st = self.steps[w.step]
        out = outputs_of(msg.envelope)
        w.credit_out = max(0, w.credit_out - 1)
        n = self.enqueue_outputs(st, out, msg.frames, *self._refs(msg))
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
            for index, exc, tb in failed:
                self.retry_or_dead_letter(st, singles[index], str(exc), str(tb))
        ok = n - len(failed)
        st.n_done += ok
        w.done += ok
        w.errors += len(failed)
        st.busy_s += busy
        if n:
            st.latencies.extend([busy / n] * min(n, 16))
        if st.kind == "consumer":
            st.n_dups += dups
        st.n_out += self.enqueue_outputs(st, out, msg.frames, refs, blob)
        self.pin(w, msg.envelope)       # before the lease's segments are released
        self.hold(batch, -1)
        self.last_event_t = time.monotonic()
        if w.state == "retiring" and not w.leases:
            self._send(w, P.STOP, {"teardown": True})

    def _check_ack(self, msg: P.Message, n: int) -> tuple:
        """(outputs, failures, shm references, blob, busy_s, dups) of an ACK for ``n`` events;
        ProtocolError if any of it is malformed."""
        env = msg.envelope
        out = outputs_of(env)
        failed = env.get("failed", [])
        if type(failed) is not list or not all(
                type(e) is list and len(e) == 3 and type(e[0]) is int and 0 <= e[0] < n
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

    def on_bye(self, w: WorkerState, msg: P.Message) -> None:
        err = msg.envelope.get("error")
        if err:
            self.step_failures.append(f"step '{w.step}' failed in teardown: {err}")
            log.error("step '%s' failed in teardown: %s", w.step, err)
        self.requeue(w, count_attempt=False)
        w.state = "done"
        self.unpin_all(w)
        st = self.steps[w.step]
        st.workers.pop(w.id, None)
        if st.finished and not st.workers:
            st.closed = True

    def on_failed(self, w: WorkerState, msg: P.Message) -> None:
        env = msg.envelope
        phase = str(env.get("phase", "process"))
        err = StepError(w.step, phase, str(env.get("error", "")), str(env.get("traceback", "")))
        st = self.steps[w.step]
        log.error("%s\n%s", err, err.traceback)
        if phase == "setup":
            self.failure = err
            return
        # a producer's generator raised: what it produced is kept, the stream ends for it
        self.step_failures.append(str(err))
        if st.kind == "producer":
            self.finish_step(st)
            self._send(w, P.STOP, {})

    # -- queues ------------------------------------------------------------------------------
    def enqueue_outputs(self, src: StepState, out: tuple, frames: list, shm=(),
                        blob: str = "") -> int:
        """Queue a worker's outputs (see `flow.state.outputs_of`) at the downstream steps: the whole batch to
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
                self._maybe_sample(src, t, batch)
            dst = self.steps[t]
            self.hold(batch, +1)
            dst.push(batch)
            dst.n_in += k
        if blob and not (kept and routes):   # copied out, or routed nowhere
            self.ledger.release_if_unused(ref_name(blob))
        return n

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
        """Apply a worker's pins (the ledger checks them); see `flow.ledger`."""
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

    def retry_or_dead_letter(self, st: StepState, single: Batch, exc: str, tb: str) -> None:
        """A single-event batch failed: queue it again (alone, at the front) or dead-letter it."""
        single.attempts += 1
        st.errors += 1
        if single.attempts < self.opts.max_retries:
            st.retries += 1
            self.hold(single, +1)
            st.push(single, front=True)
        else:
            st.dead += 1
            key, path = single.items()[0][:2]
            segments = {ref_name(r): self.shm_store.read(ref_name(r)) for r in single.shm}
            self.dead_letter.write(key, path, st.spec.name, exc, tb, single.attempts,
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

    def room(self, st: StepState) -> bool:
        return st.queue_events < self.opts.queue_limit and \
            st.queue_bytes < self.opts.queue_limit_bytes

    def targets_have_room(self, st: StepState) -> bool:
        return all(self.room(self.steps[t]) for t in st.targets)

    @property
    def taps(self):
        return self.publisher.taps if self.publisher is not None else None

    def dispatch(self) -> None:
        prefetch = self.opts.prefetch
        for st in self.steps.values():
            if st.kind == "producer":
                if self.paused or st.finished or not self.targets_have_room(st):
                    continue
                for w in st.workers.values():
                    if w.state == "ready" and w.credit_out < prefetch:
                        n = prefetch - w.credit_out
                        w.credit_out += n
                        self._send(w, P.CREDIT, {"n": n})
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

    def lease(self, st: StepState, w: WorkerState, n_free: int) -> Batch:
        """Send queued batches to ``w`` under one lease: at least one batch, more (merged) while
        the queue is deep, up to ``batch_max`` events and 8 MB. A retried event travels alone, to
        an idle worker that gets nothing else until it answers: if that worker dies, the retried
        event is the only suspect (an ACK sent just before a crash can be lost with the process,
        so "the oldest lease" alone could blame an innocent neighbour)."""
        q = st.queue
        want = max(1, min(self.opts.batch_max, math.ceil(st.queue_events / max(1, n_free * 2))))
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
        if batch.blob:
            env["blob"] = batch.blob
        self._send(w, P.DATA, env, batch.frames)
        return batch

    # -- workers -----------------------------------------------------------------------------
    def _send(self, w: WorkerState, command: bytes, envelope: dict | None = None,
              frames: list | None = None) -> None:
        w.last_sent = time.monotonic()
        self._send_ident(w.id, command, envelope, frames)

    def _send_ident(self, ident: bytes, command: bytes, envelope=None, frames=None) -> None:
        try:
            P.Message(command, envelope or {}, frames or []).send(self.sock, ident)
        except zmq.ZMQError as exc:  # peer not connected, or not reading: liveness handles it
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            log.warning("could not send %s to %r: %s", P.NAMES.get(command, command),
                        ident[:40], exc.strerror)

    def check_workers(self, now: float) -> None:
        hb = self.opts.heartbeat_s
        for w in list(self.workers.values()):
            if w.state in ("done", "dead"):
                continue
            st = self.steps[w.step]
            silent = now - w.last_seen
            limit = hb * self.opts.liveness
            if w.leases or st.kind == "producer":  # busy in `process` (a producer: in its reads)
                limit = max(limit, self.opts.stuck_timeout_s)
            if w.state == "starting":
                limit = max(limit, 120.0)
            gone = w.handle is not None and not w.handle.alive()
            if gone and w.state != "dying":
                # its last ACKs may still be on their way: take them before judging its leases
                w.died_state, w.state, w.exited_at = w.state, "dying", now
                continue
            if gone and now - w.exited_at < EXIT_GRACE_S:
                continue
            if gone or silent > limit:
                why = "process exited" if gone else f"silent for {silent:.1f} s"
                self.on_worker_lost(w, why)
            elif now - w.last_sent > hb and w.state != "starting":
                self._send(w, P.HEARTBEAT)

    def on_worker_lost(self, w: WorkerState, why: str) -> None:
        st = self.steps[w.step]
        log.warning("worker %s of step '%s' lost (%s); requeuing %d lease(s)",
                    w.id.decode(errors="replace"), w.step, why, len(w.leases))
        if w.handle is not None:
            w.handle.kill()
        was_starting = "starting" in (w.state, w.died_state)
        self.requeue(w, count_attempt=True, reason=f"worker died ({why})")
        w.state = "dead"
        self.unpin_all(w)
        st.workers.pop(w.id, None)
        if st.kind == "producer":
            if not st.finished:
                self.step_failures.append(f"producer '{st.spec.name}' died ({why})")
                self.finish_step(st)
            return
        if was_starting:
            st.start_failures += 1
            if st.start_failures >= 3:
                self.failure = RunError(f"step '{st.spec.name}': workers die while starting "
                                        f"({why}); see the log above")
                return
        if st.finished and not st.workers:
            st.closed = True
            if st.kind == "consumer":
                self.step_failures.append(f"consumer '{st.spec.name}' died after end of stream")
            return
        if not st.finished and not self._aborting_t and self.failure is None \
                and len(st.workers) < max(1, st.desired):
            self.spawn(st)

    def set_workers(self, name: str, n: int) -> None:
        """Scale a stager to ``n`` workers at run time (start or retire processes)."""
        st = self.steps[name]
        if st.kind != "stager" or st.finished:
            return
        n = max(st.min_workers, min(st.max_workers, n))
        st.desired = n
        active = [w for w in st.workers.values() if w.state in ("starting", "ready")]
        for _ in range(n - len(active)):
            self.spawn(st)
        if len(active) > n:
            victims = sorted(active, key=lambda w: (w.state == "ready", -len(w.leases)))
            for w in victims[:len(active) - n]:
                self.retire(w)

    def retire(self, w: WorkerState) -> None:
        w.state = "retiring"
        self.workers_retired += 1
        if not w.leases:
            self._send(w, P.STOP, {"teardown": True})

    # -- end of stream -----------------------------------------------------------------------
    def finish_step(self, st: StepState) -> None:
        if st.finished:
            return
        st.finished = True
        if st.kind == "producer":
            if not st.workers:
                st.closed = True
        else:
            for w in st.workers.values():
                if w.state not in ("done", "dead"):
                    self._send(w, P.EOS)
                    w.state = "eos"
            if not st.workers:
                st.closed = True
        for t in st.targets:
            self.steps[t].inputs.discard(st.spec.name)

    def advance_eos(self) -> None:
        changed = True
        while changed:
            changed = False
            for st in self.steps.values():
                if st.finished or st.kind == "producer":
                    continue
                if not st.inputs and not st.queue and st.leased() == 0:
                    self.finish_step(st)
                    changed = True
