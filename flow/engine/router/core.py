"""The router: one poll loop that leases events to workers, collects their ACKs, and ends the stream.

Small state records (`Batch`, `WorkerState`, `StepState`, in state.py) and one loop that always
has a timeout, as in the ZeroMQ guide's brokers. The router reads only envelopes; payload frames are
forwarded untouched. This module holds the loop, the dispatch of each received command, and the
graceful and hard stops; each duty the loop calls lives in a part of its own, mixed into `Router`:
lifecycle.py (workers starting, liveness, scaling), leasing.py (credit and leases), acks.py (ACKs,
retries, dead letters), eos.py (end of stream), shmrefs.py (shared-memory references).
See docs/protocol.md for the semantics implemented here (credit windows, leases, retries and
dead letters, backpressure, deterministic end of stream).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import zmq

from flow.engine.deadletter import DeadLetterFile
from flow.engine.launcher import LocalLauncher
from flow.engine.memory import tune_gc, tune_malloc
from flow.engine.router.acks import AckHandling
from flow.engine.router.eos import EndOfStream
from flow.engine.router.leasing import CreditAndLeasing
from flow.engine.router.lifecycle import WorkerLifecycle
from flow.engine.router.shmrefs import SharedMemoryRefs
from flow.engine.router.state import StepState, WorkerState, build_steps
from flow.errors import ProtocolError
from flow.graph.model import Graph
from flow.wire import protocol as P
from flow.wire.ledger import SegmentLedger
from flow.wire.shm import ShmStore, shm_free_bytes

log = logging.getLogger("flow.router")



class Router(WorkerLifecycle, CreditAndLeasing, AckHandling, EndOfStream, SharedMemoryRefs):
    """Runs one graph to completion over the workers a launcher starts.

    ``context_frames`` are the encoded producers' context sent to every worker in its CONFIG.
    ``on_tick(router)`` is called about every ``stats_interval_s`` (statistics, scaling, views).
    """

    def __init__(self, graph: Graph, endpoint: str, context_frames: list | None = None,
                 launcher=None, dead_letter: DeadLetterFile | None = None,
                 on_tick: Callable[[Router], None] | None = None,
                 ctx: zmq.Context | None = None, keys_dir: str | None = None,
                 use_specs: dict[str, str] | None = None, zygote=None):
        self.graph = graph
        self.opts = graph.router
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDTIMEO, 1000)   # a peer that stopped reading cannot stall us
        self.sock.setsockopt(zmq.LINGER, 0)
        self.security = None
        if keys_dir:
            from flow.wire.security import ServerSecurity
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
        self.launcher = launcher or LocalLauncher(endpoint, keys_dir=keys_dir, graph=graph,
                                                  zygote=zygote)
        self.dead_letter = dead_letter or DeadLetterFile(self.opts.dead_letter)
        self.on_tick = on_tick
        self.use_specs = use_specs or {}
        self.publisher = None
        self.agents: set[bytes] = set()
        self.shm_store: ShmStore | None = None    # set by enable_shm
        self.ledger: SegmentLedger | None = None  # who still needs each segment
        self.extra_sockets: dict = {}
        self.steps: dict[str, StepState] = build_steps(graph)   # fused chains included
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
        self.restart_decisions: list[dict] = []   # since the last statistics record
        self.input_warnings: list[str] = []       # producers' inputs cut short (file, last event)
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
        self._eos_due = False   # a step may have ended: advance the end of stream at once

    def enable_shm(self, prefix: str, threshold: int) -> None:
        """Large arrays travel through shared memory (flow/wire/shm.py); only for local workers."""
        self.shm_store = ShmStore(prefix, threshold)
        self.shm_store.cleanup()
        self.ledger = SegmentLedger(self.shm_store)
        # each process may keep this much of /dev/shm pooled: about what can be in flight, and
        # never more than a quarter of what is free (a container's /dev/shm can be small)
        self.shm_pool_bytes = min(2 * self.opts.queue_limit_bytes + (64 << 20),
                                  shm_free_bytes() // 4)

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
                if self._eos_due:
                    self._eos_due = False
                    self.advance_eos()
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
        getattr(self.launcher, "close", lambda: None)()   # the worker template, if any
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
            self.on_ready(w, msg)
        elif cmd == P.EOS:
            self.on_eos(w, msg)
            self._eos_due = True
        elif cmd == P.BYE:
            self.on_bye(w, msg)
            self._eos_due = True
        elif cmd == P.FAILED:
            self.on_failed(w, msg)
        else:
            raise ProtocolError(f"unexpected {msg.name} from a worker")

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
