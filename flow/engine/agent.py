"""``flow agent``: starts and stops worker processes on this host when a router asks.

An agent connects a DEALER to the router's data endpoint (a CURVE client when it has keys) and
sends AGENT ``{host, cpus, name, agent_id, pid, workers, exited}`` at once and then every heartbeat:
``workers`` lists the worker ids alive here, ``exited`` the ``[id, returncode]`` of workers that
ended in the last `EXITED_KEEP_S` seconds (repeated, so a lost message costs nothing). The router's
launcher answers each AGENT with a HEARTBEAT ``{heartbeat_s, liveness}``, whose settings the agent
adopts, and sends SPAWN ``{worker, step}`` and KILL ``{worker}``.

A SPAWN starts ``python -m flow.engine.worker ENDPOINT WORKER STEP [--keys DIR]`` (the worker connects to the
router itself); a KILL kills it. Exited children are reaped and reported at once.

When the router goes silent for ``liveness × heartbeat_s`` the agent closes its socket and opens a
new one (a half-open TCP connection, a restarted router), then retries with exponential back-off
capped at `BACKOFF_MAX_S`. When the router has been silent longer than ``orphan_timeout_s`` (default
``2 × liveness × heartbeat_s``, which is when workers give up on their own) the agent kills its
workers, so no process outlives its run. Workers also get SIGKILL if the agent itself dies (Linux
``PR_SET_PDEATHSIG``). SIGTERM/SIGINT: kill the workers and exit.
"""

from __future__ import annotations

import logging
import os
import signal
import socket as _socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import zmq

from flow.engine.launcher import local_env, worker_command
from flow.errors import ProtocolError
from flow.wire import protocol as P

log = logging.getLogger("flow.agent")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 5.0
EXITED_KEEP_S = 10.0
KILL_GRACE_S = 2.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGKILL when the agent dies (no orphans even after kill -9)."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class AgentWorker:
    """One worker process started by the agent."""

    worker_id: str
    step: str
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


class Agent:
    """State and loop of one agent (see the module docstring)."""

    def __init__(self, endpoint: str, cpus: int, keys_dir: str | None = None,
                 name: str | None = None, heartbeat_s: float = 1.0, liveness: int = 5,
                 orphan_timeout_s: float | None = None, ctx: zmq.Context | None = None):
        if cpus < 1:
            raise ValueError(f"cpus must be >= 1, not {cpus}")
        self.endpoint = endpoint
        self.cpus = cpus
        self.keys_dir = keys_dir
        self.host = _socket.gethostname()
        self.name = name or f"{self.host}:{os.getpid()}"
        self.agent_id = uuid.uuid4().hex
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self._orphan_timeout_s = orphan_timeout_s
        self.ctx = ctx or zmq.Context.instance()
        self.security = None
        if keys_dir:
            from flow.wire.security import ClientSecurity
            self.security = ClientSecurity(keys_dir)     # ConfigError now, not at connect
        self.env = local_env()
        self.workers: dict[str, AgentWorker] = {}
        self.exited: list[tuple[float, str, int]] = []    # (when, worker id, return code)
        self.sock: zmq.Socket | None = None
        self.sock_t = 0.0                 # when the current socket was made
        self.heard_on_sock = False
        self.last_heard = time.monotonic()    # from the router, on any socket
        self.last_sent = 0.0
        self.backoff = BACKOFF_START_S
        self.reconnects = 0
        self.stopping = False
        self.spawned = 0
        self.refused = 0

    @property
    def orphan_timeout_s(self) -> float:
        if self._orphan_timeout_s is not None:
            return self._orphan_timeout_s
        return 2.0 * self.liveness * self.heartbeat_s

    # -- socket ------------------------------------------------------------------------------
    def connect(self) -> None:
        """(Re)create the DEALER and announce ourselves."""
        if self.sock is not None:
            self.sock.close(0)
            self.reconnects += 1
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(BACKOFF_MAX_S * 1000))
        if self.security is not None:
            self.security.apply_client(sock)
        sock.connect(self.endpoint)
        self.sock = sock
        self.sock_t = time.monotonic()
        self.heard_on_sock = False
        self.send_agent()

    def send_agent(self) -> None:
        now = time.monotonic()
        self.exited = [e for e in self.exited if now - e[0] < EXITED_KEEP_S]
        env = {"host": self.host, "cpus": self.cpus, "name": self.name,
               "agent_id": self.agent_id, "pid": os.getpid(),
               "workers": sorted(self.workers), "exited": [[w, rc] for _, w, rc in self.exited]}
        try:
            self.sock.send_multipart(P.Message(P.AGENT, env).to_frames(), zmq.NOBLOCK)
        except zmq.Again:      # not connected yet, or the pipe is full: the next heartbeat retries
            pass
        self.last_sent = now

    # -- workers -----------------------------------------------------------------------------
    def spawn(self, worker_id: str, step: str) -> None:
        if worker_id in self.workers:
            return
        if len(self.workers) >= self.cpus:
            log.warning("refusing worker %s of step '%s': all %d cpu(s) busy", worker_id, step,
                        self.cpus)
            self.refused += 1
            self.exited.append((time.monotonic(), worker_id, -1))
            self.send_agent()
            return
        cmd = worker_command(self.endpoint, worker_id, step, self.keys_dir)
        kw = {"preexec_fn": _die_with_parent} if sys.platform.startswith("linux") else {}
        proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, **kw)
        self.workers[worker_id] = AgentWorker(worker_id, step, proc)
        self.spawned += 1
        log.info("started worker %s of step '%s' (pid %d)", worker_id, step, proc.pid)
        self.send_agent()

    def kill(self, worker_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None and w.process.poll() is None:
            log.info("killing worker %s (pid %d)", worker_id, w.process.pid)
            w.process.kill()

    def kill_all(self, grace_s: float = 0.0) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after ``grace_s``) and reap them."""
        procs = [w.process for w in self.workers.values() if w.process.poll() is None]
        for p in procs:
            p.terminate() if grace_s > 0 else p.kill()
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.reap()

    def reap(self) -> bool:
        """Collect exited workers; True when some ended (the router is told at once)."""
        ended = [w for w in self.workers.values() if w.process.poll() is not None]
        now = time.monotonic()
        for w in ended:
            del self.workers[w.worker_id]
            self.exited.append((now, w.worker_id, w.process.returncode))
            log.info("worker %s exited (%s)", w.worker_id, w.process.returncode)
        return bool(ended)

    # -- loop --------------------------------------------------------------------------------
    def on_message(self, msg: P.Message) -> None:
        env = msg.envelope
        if msg.command == P.HEARTBEAT:
            hb, lv = env.get("heartbeat_s"), env.get("liveness")
            if isinstance(hb, (int, float)) and 0 < hb <= 3600:
                self.heartbeat_s = float(hb)
            if isinstance(lv, int) and 0 < lv <= 1000:
                self.liveness = lv
        elif msg.command == P.SPAWN:
            wid, step = env.get("worker"), env.get("step")
            if not (isinstance(wid, str) and isinstance(step, str) and wid and step):
                raise ProtocolError("malformed SPAWN")
            self.spawn(wid, step)
        elif msg.command == P.KILL:
            wid = env.get("worker")
            if not isinstance(wid, str):
                raise ProtocolError("malformed KILL")
            self.kill(wid)
        elif msg.command == P.STOP:
            pass       # not a worker: nothing to stop (the router sends STOP to unknown peers)
        else:
            raise ProtocolError(f"unexpected {msg.name} for an agent")

    def step(self, timeout_ms: int) -> None:
        """One turn of the loop: receive, reap, heartbeat, judge the router's silence."""
        if self.sock.poll(timeout_ms):
            for _ in range(64):
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.last_heard = time.monotonic()
                self.heard_on_sock = True
                self.backoff = BACKOFF_START_S
                try:
                    self.on_message(P.Message.from_frames(frames))
                except ProtocolError as exc:
                    log.warning("dropped a message from the router: %s", exc)
        if self.reap():
            self.send_agent()
        now = time.monotonic()
        if now - self.last_sent >= self.heartbeat_s:
            self.send_agent()
        silent = now - self.last_heard
        if self.workers and silent > self.orphan_timeout_s:
            log.warning("router silent for %.1f s: killing %d worker(s)", silent, len(self.workers))
            self.kill_all()
        if self.heard_on_sock:
            if silent > self.liveness * self.heartbeat_s:
                log.warning("router silent for %.1f s: reconnecting", silent)
                self.connect()
        elif now - self.sock_t > self.backoff:
            self.backoff = min(BACKOFF_MAX_S, self.backoff * 2)
            self.connect()

    def run(self) -> int:
        def on_signal(signum, frame):
            self.stopping = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log.info("agent %s: %d cpu(s), connecting to %s", self.name, self.cpus, self.endpoint)
        try:
            self.connect()
            while not self.stopping:
                self.step(int(min(self.heartbeat_s, 0.2) * 1000))
        finally:
            self.kill_all(KILL_GRACE_S)
            if self.sock is not None:
                try:       # tell the router at once which workers are gone
                    self.send_agent()
                except zmq.ZMQError:
                    pass
                self.sock.close(200)
            for s, h in old.items():
                signal.signal(s, h)
        return 0


__all__ = ["Agent", "AgentWorker"]
