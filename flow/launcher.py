"""Starting and stopping worker processes.

`LocalLauncher` starts each worker as a fresh interpreter (``python -m flow.worker``): a true spawn,
safe where fork is not (threads, Qt, CUDA, macOS), and independent of how the parent was started (no
``if __name__ == "__main__"`` guard needed in user scripts). The router asks a launcher for workers and
never cares where they run; `flow.agent` provides the remote counterpart.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass


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
    cmd = [sys.executable, "-m", "flow.worker", endpoint, worker_id, step]
    if keys_dir:
        cmd += ["--keys", keys_dir]
    return cmd


class LocalLauncher:
    """Spawns worker processes on this host, connected to ``endpoint``."""

    def __init__(self, endpoint: str, keys_dir: str | None = None, run_tag: str = ""):
        self.endpoint = endpoint
        self.keys_dir = keys_dir
        self._ids = itertools.count()
        self.run_tag = run_tag or f"{os.getpid()}"
        self.started = 0
        self.env = dict(os.environ)
        path = self.env.get("PYTHONPATH", "")
        cwd = os.getcwd()
        if cwd not in path.split(os.pathsep):
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, path) if p)

    def start(self, step: str) -> Handle:
        wid = f"{step}.{self.run_tag}.{next(self._ids)}"
        proc = subprocess.Popen(worker_command(self.endpoint, wid, step, self.keys_dir),
                                env=self.env, stdin=subprocess.DEVNULL)
        self.started += 1
        return Handle(wid, step, proc)
