"""Starting and stopping worker processes, on this host or on agents.

`LocalLauncher` starts each worker from a warm template by default (``router: {start_method: zygote}``):
a `Zygote`, one fresh interpreter (`flow.engine.zygote`) that imports the worker and the steps' modules
once and forks a worker per request, so a worker starts in milliseconds instead of paying those imports
again. The template is itself a fresh interpreter, so nothing of the parent is inherited (no
sockets, no ZeroMQ context, no threads of a GUI or of CUDA) and no ``if __name__ == "__main__"`` guard
is needed in user scripts. ``start_method: spawn`` (and any platform without ``os.fork``) starts each
worker as a fresh interpreter (``python -m flow.engine.worker``), as before; a template that cannot
start or dies falls back to that. The router asks a launcher for workers and
never cares where they run; `flow.engine.agent` provides the remote counterpart.

Agents (``flow agent``, see `flow.engine.agent`) are handled by the same launcher, so the router's default
launcher accepts them with no configuration: while no agent has registered, `LocalLauncher` behaves
exactly as a purely local launcher. Once agents have registered (protocol command AGENT, their
heartbeat), a worker of an unpinned stager goes to the agent with the most free CPUs (SPAWN), and
to this host when no agent has a free CPU. Producers, consumers and steps with ``pinned: true`` stay
on this host. An agent silent for ``liveness × heartbeat_s`` is dropped: the handles of its workers
report ``alive() == False``, so the router requeues their leases and starts replacements (here, or
on another agent). ``agent_wait_s`` (default: the ``FLOW_AGENT_WAIT_S`` environment variable, else 0)
makes the first workers wait that long for a first agent to register before they are started here.
`AgentLauncher` is the same class, under the name the design uses.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

from flow.engine.zygote import ForkedProcess, Zygote, preload_modules
from flow.errors import ProtocolError
from flow.graph.model import Graph
from flow.wire import protocol as P

log = logging.getLogger("flow.launcher")


@dataclass
class Handle:
    """A started worker: its id and, for local ones, the process."""

    worker_id: str
    step: str
    process: subprocess.Popen | None = None
    agent: bytes | None = None

    def alive(self) -> bool:
        if self.process is None:
            return True  # remote: liveness is judged by heartbeats
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()

    def join(self, timeout: float) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass


def worker_command(endpoint: str, worker_id: str, step: str, keys_dir: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "flow.engine.worker", endpoint, worker_id, step]
    if keys_dir:
        cmd += ["--keys", keys_dir]
    return cmd


def local_env() -> dict:
    """The environment of a worker process: ours, with the current directory on PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    cwd = os.getcwd()
    if cwd not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, path) if p)
    return env


@dataclass(eq=False)
class PlacedHandle(Handle):
    """A worker whose place is decided by the launcher: waiting for an agent (``pending``), started
    here (``local``: `process` is set), on an agent (``remote``: `agent` is its identity), or gone
    (``lost``: its agent vanished or it exited there; ``killed``)."""

    launcher: LocalLauncher | None = None
    state: str = "pending"
    agent_id: str = ""
    spawned_t: float = 0.0
    confirmed: bool = False          # listed by its agent at least once
    exit_code: int | None = None

    def alive(self) -> bool:
        if self.launcher is not None:
            self.launcher.poll()
        if self.state == "local":
            return super().alive()
        return self.state in ("pending", "remote")

    def kill(self) -> None:
        if self.state == "local":
            super().kill()
        elif self.state == "pending":
            self.state = "killed"
        elif self.state == "remote":
            self.state = "killed"
            if self.launcher is not None:
                self.launcher.kill_remote(self)

    def join(self, timeout: float) -> None:
        if self.state == "local":
            super().join(timeout)


@dataclass(eq=False)
class AgentInfo:
    """A registered agent: where it is, what it offers, and the workers placed on it."""

    agent_id: str
    ident: bytes
    host: str = ""
    name: str = ""
    pid: int = 0
    cpus: int = 0
    first_seen: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    workers: dict = field(default_factory=dict)     # worker id -> PlacedHandle

    def free(self) -> int:
        return self.cpus - len(self.workers)


class LocalLauncher:
    """Spawns worker processes on this host, connected to ``endpoint``; places workers of unpinned
    stagers on registered agents when they have free CPUs (see the module docstring).

    ``graph`` (or `attach`) tells the launcher which steps may run on agents before the first agent
    registers; without it the launcher learns it from the router at the first AGENT message.
    """

    def __init__(self, endpoint: str, keys_dir: str | None = None, run_tag: str = "",
                 graph=None, agent_wait_s: float | None = None, start_method: str | None = None,
                 zygote: Zygote | None = None):
        self.endpoint = endpoint
        if start_method is None:
            start_method = getattr(getattr(graph, "router", None), "start_method", "spawn")
        self.start_method = start_method if hasattr(os, "fork") else "spawn"
        self.zygote: Zygote | None = zygote   # started early by `flow.engine.run` (or at need)
        self.keys_dir = keys_dir
        self._ids = itertools.count()
        self.run_tag = run_tag or f"{os.getpid()}"
        self.started = 0
        self.env = local_env()
        self.graph = graph
        self.router = None
        if agent_wait_s is None:
            try:
                agent_wait_s = float(os.environ.get("FLOW_AGENT_WAIT_S", "0") or 0)
            except ValueError:
                log.warning("ignoring FLOW_AGENT_WAIT_S=%r (not a number)",
                            os.environ.get("FLOW_AGENT_WAIT_S"))
                agent_wait_s = 0.0
        self.agent_wait_s = max(0.0, agent_wait_s)
        self._wait_until = time.monotonic() + self.agent_wait_s
        self.agents: dict[str, AgentInfo] = {}          # agent id -> AgentInfo
        self._by_ident: dict[bytes, str] = {}
        self._pending: list[PlacedHandle] = []
        self._ever_registered = False
        self._next_poll = 0.0
        self.heartbeat_s = 1.0
        self.liveness = 5
        self.started_remote = 0
        self.agents_lost = 0

    # -- placement ---------------------------------------------------------------------------
    def attach(self, router) -> None:
        """Know the router (its graph, its socket for SPAWN/KILL, its heartbeat settings)."""
        self.router = router
        self.graph = getattr(router, "graph", self.graph)
        opts = getattr(router, "opts", None)
        if opts is not None:
            self.heartbeat_s = float(opts.heartbeat_s)
            self.liveness = int(opts.liveness)

    def start(self, step: str) -> Handle:
        wid = f"{step}.{self.run_tag}.{next(self._ids)}"
        ok = self.remote_ok(step)
        if ok is not False:
            agent = self._free_agent() if ok else None
            if agent is not None or self._waiting():
                h = PlacedHandle(wid, step, launcher=self)
                self._place(h)
                if h.state == "pending":
                    self._pending.append(h)
                return h
        return self._start_process(wid, step)       # here, as a purely local launcher would

    def _start_process(self, wid: str, step: str) -> Handle:
        proc = self._fork(wid, step) if self.start_method == "zygote" else None
        if proc is None:
            proc = subprocess.Popen(worker_command(self.endpoint, wid, step, self.keys_dir),
                                    env=self.env, stdin=subprocess.DEVNULL)
        self.started += 1
        return Handle(wid, step, proc)

    def _fork(self, wid: str, step: str) -> ForkedProcess | None:
        """A worker forked from the template (started at the first request); None if it cannot
        be (the caller spawns instead, and so does every later start)."""
        try:
            if self.zygote is None:
                self.zygote = Zygote(preload_modules(self.graph), self.env)
            spec = next((s for s in getattr(self.graph, "steps", ()) if s.name == step), None)
            return self.zygote.start(self.endpoint, wid, step, self.keys_dir,
                                     kind=spec.kind if spec is not None else None)
        except OSError as exc:
            log.warning("worker template unavailable (%s): spawning workers instead", exc)
            self.start_method = "spawn"
            self.close()
            return None

    def close(self) -> None:
        """Stop the worker template, if one was started."""
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    def remote_ok(self, step: str) -> bool | None:
        """Whether ``step`` may run on an agent (an unpinned stager); None while the graph is
        unknown."""
        if self.graph is None:
            return None
        spec = next((s for s in self.graph.steps if s.name == step), None)
        if spec is None:
            return False
        steps = getattr(self.router, "steps", None)
        if steps and step in steps:          # the router's view: a fused chain's pinning
            pinned = bool(steps[step].pinned)
        elif isinstance(self.graph, Graph):  # a chain is pinned when one of its steps is
            from flow.graph.fusion import chain_pinned, plan
            chain = next((c for c in plan(self.graph) if c.head == step), None)
            pinned = chain_pinned(self.graph, chain) if chain is not None else spec.pinned
        else:
            pinned = spec.pinned
        return spec.kind == "stager" and not pinned

    def _waiting(self) -> bool:
        return (self.agent_wait_s > 0 and not self._ever_registered
                and time.monotonic() < self._wait_until)

    def _place(self, h: PlacedHandle) -> None:
        ok = self.remote_ok(h.step)
        agent = self._free_agent() if ok else None
        if agent is not None:
            self._spawn_remote(h, agent)
        elif ok is not False and self._waiting():
            h.state = "pending"
        else:
            h.process = self._start_process(h.worker_id, h.step).process
            h.state = "local"

    def _free_agent(self) -> AgentInfo | None:
        free = [a for a in self.agents.values() if a.free() > 0]
        if not free:
            return None
        return max(free, key=lambda a: (a.free(), -a.first_seen))

    def _spawn_remote(self, h: PlacedHandle, agent: AgentInfo) -> None:
        h.state, h.agent, h.agent_id = "remote", agent.ident, agent.agent_id
        h.spawned_t = time.monotonic()
        agent.workers[h.worker_id] = h
        self.started_remote += 1
        log.info("worker %s of step '%s' placed on agent %s (%s)", h.worker_id, h.step,
                 agent.name or agent.agent_id, agent.host)
        self._send(agent.ident, P.SPAWN, {"worker": h.worker_id, "step": h.step})

    def _resolve_pending(self) -> None:
        still = []
        for h in self._pending:
            if h.state == "pending":
                self._place(h)
            if h.state == "pending":
                still.append(h)
        self._pending = still

    def kill_remote(self, h: PlacedHandle) -> None:
        agent = self.agents.get(h.agent_id)
        if agent is not None:
            self._send(agent.ident, P.KILL, {"worker": h.worker_id})

    def _send(self, ident: bytes, command: bytes, envelope: dict) -> None:
        if self.router is not None:
            self.router._send_ident(ident, command, envelope)

    def remote_cpus(self) -> int:
        """CPUs offered by the registered agents (to add to the scaler's budget)."""
        return sum(a.cpus for a in self.agents.values())

    # -- agents ------------------------------------------------------------------------------
    def on_agent_message(self, router, ident: bytes, msg) -> None:
        """An AGENT message (registration and heartbeat): register or refresh the agent, reconcile
        its worker list, answer with a HEARTBEAT, and place waiting workers."""
        if self.router is not router:
            self.attach(router)
        if msg.command != P.AGENT:
            raise ProtocolError(f"unexpected {msg.name} from an agent")
        env = msg.envelope
        agent_id = env.get("agent_id", ident.hex())
        cpus = env.get("cpus")
        workers = env.get("workers", [])
        exited = env.get("exited", [])
        if not (isinstance(agent_id, str) and isinstance(cpus, int) and 0 <= cpus <= 4096
                and isinstance(workers, list) and all(isinstance(w, str) for w in workers)
                and isinstance(exited, list)
                and all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                        for e in exited)):
            raise ProtocolError("malformed AGENT envelope")
        now = time.monotonic()
        agent = self.agents.get(agent_id)
        if agent is None:
            agent = AgentInfo(agent_id, ident)
            self.agents[agent_id] = agent
            self._ever_registered = True
            log.info("agent %s joined from %s with %d cpu(s)", env.get("name") or agent_id,
                     env.get("host", "?"), cpus)
        if agent.ident != ident:           # the agent reconnected with a new socket
            self._by_ident.pop(agent.ident, None)
            router.agents.discard(agent.ident)
            agent.ident = ident
            for h in agent.workers.values():
                h.agent = ident
        self._by_ident[ident] = agent_id
        agent.host, agent.name = str(env.get("host", "")), str(env.get("name", ""))
        pid = env.get("pid", 0)
        agent.pid, agent.cpus, agent.last_seen = pid if type(pid) is int else 0, cpus, now
        for wid, rc in exited:
            h = agent.workers.pop(wid, None)
            if h is not None:
                h.exit_code = rc if isinstance(rc, int) else None
                if h.state == "remote":
                    h.state = "lost"
        listed = set(workers)
        for wid in listed:
            h = agent.workers.get(wid)
            if h is None or h.state == "killed":
                # not ours (declared dead, an earlier run), or a KILL that got lost: stop it
                self._send(ident, P.KILL, {"worker": wid})
            if h is not None:
                h.confirmed = True
        spawn_timeout = max(5.0, 2 * self.liveness * self.heartbeat_s)
        for wid, h in list(agent.workers.items()):
            if wid in listed:
                continue
            if h.confirmed or now - h.spawned_t > spawn_timeout:
                # it vanished without a report, or its SPAWN was lost
                agent.workers.pop(wid)
                if h.state == "remote":
                    h.state = "lost"
        self._send(ident, P.HEARTBEAT, {"heartbeat_s": self.heartbeat_s,
                                        "liveness": self.liveness})
        self._resolve_pending()

    def poll(self, now: float | None = None) -> None:
        """Drop silent agents and start waiting workers whose wait is over (called from the handles'
        `alive`, which the router checks every heartbeat/2)."""
        now = time.monotonic() if now is None else now
        if now < self._next_poll:
            return
        self._next_poll = now + 0.05
        limit = self.liveness * self.heartbeat_s
        for agent in list(self.agents.values()):
            if now - agent.last_seen > limit:
                self.drop_agent(agent, f"silent for {now - agent.last_seen:.1f} s")
        if self._pending:
            self._resolve_pending()

    def drop_agent(self, agent: AgentInfo, why: str) -> None:
        """Forget an agent: its workers are lost (the router requeues their leases)."""
        self.agents.pop(agent.agent_id, None)
        self._by_ident.pop(agent.ident, None)
        if self.router is not None:
            self.router.agents.discard(agent.ident)
        self.agents_lost += 1
        log.warning("agent %s (%s) dropped (%s); %d worker(s) lost", agent.name or agent.agent_id,
                    agent.host, why, len(agent.workers))
        for h in agent.workers.values():
            if h.state == "remote":
                h.state = "lost"
        agent.workers.clear()


#: The launcher with agent support: `LocalLauncher` places workers on agents once they register.
AgentLauncher = LocalLauncher
