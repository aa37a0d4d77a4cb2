"""Worker lifecycle and liveness: starting workers, their HELLO/CONFIG handshake, BYE and FAILED,
heartbeats and the liveness check that declares a silent or exited worker lost (its leases
requeued), and scaling a stager up or down at run time.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Reads and writes ``self.workers``, ``self.steps[...].workers``, each `WorkerState`'s ``state``,
``last_seen``, ``last_sent``; starts processes through ``self.launcher``.
"""

from __future__ import annotations

import logging

from flow.engine.router.state import StepState, WorkerState, chain_config, unit_of
from flow.errors import ProtocolError, RunError, StepError
from flow.wire import protocol as P

log = logging.getLogger("flow.router")
EXIT_GRACE_S = 0.25  # after a worker's process exits, time for its last messages to arrive


class WorkerLifecycle:
    """Worker lifecycle and liveness of the router (see the module docstring)."""

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
        if st.members:   # a fused chain (state.build_steps): every step of it, in order
            env["chain"] = chain_config(st, self.use_specs, self.opts.max_retries)
        self._send(w, P.CONFIG, env, self.context_frames)

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
        st = unit_of(self.steps[name])   # a fused step scales with its chain
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
