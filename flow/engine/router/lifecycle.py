"""Worker lifecycle and liveness: starting workers, their HELLO/CONFIG handshake, READY, BYE and
FAILED, heartbeats and the liveness check that declares a silent or exited worker lost (its leases
requeued), its replacement as the restart policy decides (flow/engine/restart.py: back-off, give
up, fail fast on a setup error; a replayable producer resumes after its last accepted event), and
scaling a stager up or down at run time.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Reads and writes ``self.workers``, ``self.steps[...].workers``, each `WorkerState`'s ``state``,
``last_seen``, ``last_sent``; starts processes through ``self.launcher``.
"""

from __future__ import annotations

import logging
import time

from flow.engine import restart
from flow.engine.router.state import StepState, WorkerState, chain_config, unit_of
from flow.errors import ProtocolError, RunError, StepError
from flow.wire import protocol as P

log = logging.getLogger("flow.router")
EXIT_GRACE_S = 0.25  # after a worker's process exits, time for its last messages to arrive


class WorkerLifecycle:
    """Worker lifecycle and liveness of the router (see the module docstring)."""

    def start(self) -> None:
        # consumers and producers first: the worker template loads the jitted kernels (a few
        # tenths of a second) at its first stager, and the others' set-up (a writer's file)
        # overlaps it instead of waiting behind it
        first = {"consumer": 0, "producer": 1}
        for st in sorted(self.steps.values(), key=lambda st: first.get(st.kind, 2)):
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
               "resume_from": st.resume_from,
               "shm": ({"prefix": self.shm_store.prefix, "threshold": self.shm_store.threshold,
                        "pool_bytes": self.shm_pool_bytes}
                       if self.shm_store is not None else None)}
        if st.members:   # a fused chain (state.build_steps): every step of it, in order
            env["chain"] = chain_config(st, self.use_specs, self.opts.max_retries)
        self._send(w, P.CONFIG, env, self.context_frames)

    def on_ready(self, w: WorkerState, msg: P.Message) -> None:
        st = self.steps[w.step]
        log.info("worker %s of step '%s' ready after %.2f s", w.id.decode(errors="replace"),
                 w.step, time.monotonic() - w.started_t)
        st.restart = restart.on_ready(st.restart)
        if st.kind == "producer":
            st.replayable = msg.envelope.get("replayable") is True
        if w.state == "retiring":  # retired while starting: its STOP may not have reached it
            self._send(w, P.STOP, {"teardown": True})
        elif st.finished and st.kind == "producer":   # drained while it was starting
            self._send(w, P.STOP, {})
        elif st.finished:          # a replacement of a step that has ended its stream meanwhile
            self._send(w, P.EOS)
            w.state = "eos"
        else:
            w.state = "ready"

    def on_eos(self, w: WorkerState, msg: P.Message) -> None:
        """A producer's stream ended; the warnings it sends (an input file cut short, naming
        the file and the last event read) go to the summary and the statistics stream."""
        st = self.steps[w.step]
        if st.kind != "producer":
            return
        warned = msg.envelope.get("warnings", [])
        if type(warned) is not list or not all(type(x) is str for x in warned):
            raise ProtocolError("malformed warnings in EOS")
        for text in warned[:20]:
            self.input_warnings.append(f"producer '{st.spec.name}': {text}")
            log.warning("producer '%s': %s", st.spec.name, text)
        self._send(w, P.STOP, {})
        self.finish_step(st)

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
            _, decision = restart.on_loss(st.restart, restart.SETUP, str(err), time.monotonic())
            self.record_decision(st, w, decision)
            self.restart_decisions[-1]["traceback"] = err.traceback
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
            if w.state in ("starting", "eos"):   # in setup or teardown: no heartbeats then
                limit = max(limit, 120.0)
            gone = w.handle is not None and not w.handle.alive()
            if gone and w.state != "dying":
                # its last ACKs may still be on their way: take them before judging its leases
                w.died_state, w.state, w.exited_at = w.state, "dying", now
                continue
            if gone and now - w.exited_at < EXIT_GRACE_S:
                continue
            if gone or silent > limit:
                agent_lost = getattr(w.handle, "state", "") == "lost" and \
                    getattr(w.handle, "exit_code", None) is None
                cause = restart.classify(returncode_of(w.handle) if gone else None,
                                         None if gone else silent, agent_lost)
                self.on_worker_lost(w, cause[1], cause[0])
            elif now - w.last_sent > hb and w.state != "starting":
                self._send(w, P.HEARTBEAT)
        self.start_due(now)

    def on_worker_lost(self, w: WorkerState, why: str, cause: str = restart.EXIT) -> None:
        st = self.steps[w.step]
        log.warning("worker %s of step '%s' lost (%s); requeuing %d lease(s)",
                    w.id.decode(errors="replace"), w.step, why, len(w.leases))
        if w.handle is not None:
            w.handle.kill()
        self.requeue(w, count_attempt=True, reason=f"worker died ({why})")
        w.state = "dead"
        self.unpin_all(w)
        st.workers.pop(w.id, None)
        if self._aborting_t or self.failure is not None:
            return       # a consequence of the abort, not a failure of its own
        if st.kind == "producer" and st.finished:
            return       # it had sent its EOS
        if st.kind == "stager" and st.finished:
            if not st.workers:
                st.closed = True
            return
        if st.kind == "stager" and len(st.workers) + st.pending >= max(1, st.desired):
            return       # scaled down meanwhile
        # a producer that had nothing accepted yet loses nothing by starting again
        replayable = st.kind != "producer" or st.replayable or st.resume_from == 0
        st.restart, decision = restart.on_loss(st.restart, cause, why, time.monotonic(),
                                               replayable=replayable)
        self.record_decision(st, w, decision)
        if decision.action == restart.RESTART:
            st.pending += 1
            self.start_due(time.monotonic())
        else:
            what = "producer" if st.kind == "producer" else "step"
            self.failure = RunError(f"{what} '{st.spec.name}' lost a worker: {decision.reason}")

    def start_due(self, now: float) -> None:
        """Start the replacements whose back-off is over (none once the run is failing)."""
        for st in self.steps.values():
            if not st.pending or not restart.due(st.restart, now):
                continue
            if self._aborting_t or self.failure is not None or \
                    (st.finished and st.kind != "consumer"):
                st.pending = 0
                continue
            while st.pending:
                st.pending -= 1
                self.spawn(st)

    def record_decision(self, st: StepState, w: WorkerState, decision: restart.Decision) -> None:
        """A restart decision, in the log and (at the next tick) in the statistics stream."""
        rec = decision.to_dict(st.spec.name, time.time())
        rec["worker"] = w.id.decode(errors="replace")
        self.restart_decisions.append(rec)
        if decision.action == restart.RESTART:
            st.restarts += 1
            log.warning("step '%s': worker %s %s", st.spec.name, rec["worker"], decision.reason)
        else:
            log.error("step '%s': %s: %s", st.spec.name, decision.action, decision.reason)

    def take_restart_decisions(self) -> list[dict]:
        """The restart decisions since the last call (for the statistics stream)."""
        out, self.restart_decisions = self.restart_decisions, []
        return out

    def failure_reasons(self) -> list[str]:
        """Every reason the run failed, in order (the summary's and the statistics' failures)."""
        return list(self.step_failures) + ([str(self.failure)] if self.failure is not None else [])

    def set_workers(self, name: str, n: int) -> None:
        """Scale a stager to ``n`` workers at run time (start or retire processes)."""
        st = unit_of(self.steps[name])   # a fused step scales with its chain
        if st.kind != "stager" or st.finished or self._aborting_t or self.failure is not None \
                or self.finished_t:   # (the last tick after a failed run must start nothing)
            return
        n = max(st.min_workers, min(st.max_workers, n))
        st.desired = n
        active = [w for w in st.workers.values() if w.state in ("starting", "ready")]
        st.pending = max(0, min(st.pending, n - len(active)))
        for _ in range(n - len(active) - st.pending):
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


def returncode_of(handle) -> int | None:
    """The exit code of a worker's process (negative: the signal that ended it), or None when
    it is unknown (a remote worker whose agent did not report it)."""
    process = getattr(handle, "process", None)
    if process is not None:
        return process.poll()
    return getattr(handle, "exit_code", None)
