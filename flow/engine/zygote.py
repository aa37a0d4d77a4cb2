"""A warm template for worker processes: one fresh interpreter that imports what workers need,
then forks a worker per request (``python -m flow.engine.zygote MODULE...``).

Spawning each worker as a new interpreter costs every worker the imports of numpy, numba, astropy
and the steps' modules (1.5-2.5 s of CPU each on the DL2 graph). The zygote pays them once: it is
itself started as a fresh interpreter (nothing of the router is inherited: no sockets, no ZeroMQ
context, no threads of the parent), imports the modules it is given and loads from numba's disk
cache the jitted kernels earlier workers ran (`flow.engine.kernels`), *without* creating any ZeroMQ
context, instantiating any step or starting a thread of its own. Each worker is then a fork of that
clean, single-threaded template, which re-seeds its random generators and runs
`flow.engine.worker.worker_main` as a spawned worker would.

Requests arrive on stdin, one JSON line ``{"endpoint", "worker_id", "step", "keys"}``; the zygote
answers on the file descriptor given by ``--reply-fd`` with one line, the worker's pid (or
``error: ...``). The zygote reaps its children; it exits when stdin closes (its launcher is gone),
leaving running workers to end on their own (they leave once their router is silent).
`Zygote` (used by `flow.engine.launcher.LocalLauncher`) is the client side and `ForkedProcess` the
handle of a worker it forked.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def preload(modules: list[str]) -> list[str]:
    """Import ``modules`` (the worker and the steps' modules); the ones that fail are skipped and
    returned: the worker that needs one imports it itself and reports the error then."""
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:   # a step module that fails to import: the worker says why
            failed.append(name)
    return failed


_STATUS_DIR: str | None = None   # where the zygote records each reaped worker's exit code


def _reap(signum=None, frame=None) -> None:
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            if _STATUS_DIR:   # the router reads it: "killed by SIGKILL", not "unknown"
                record_exit(_STATUS_DIR, pid, os.waitstatus_to_exitcode(status))
    except ChildProcessError:
        return


def record_exit(status_dir: str, pid: int, code: int) -> None:
    """Write ``code`` (negative: the signal) for ``pid`` in ``status_dir``, atomically."""
    tmp = os.path.join(status_dir, f".{pid}")
    try:
        with open(tmp, "w") as f:
            f.write(str(code))
        os.replace(tmp, os.path.join(status_dir, str(pid)))
    except OSError:   # the run has ended and removed the directory
        pass


def read_exit(status_dir: str | None, pid: int) -> int | None:
    """The exit code the zygote recorded for ``pid``, or None when it has none (yet)."""
    if not status_dir:
        return None
    try:
        with open(os.path.join(status_dir, str(pid))) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _child(request: dict, reply_fd: int) -> None:
    """In the forked worker: forget the zygote's pipes and handlers, then be a worker."""
    os.close(reply_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    np = sys.modules.get("numpy")
    if np is not None:   # the global generator would otherwise be the zygote's, in every worker
        np.random.seed()
    from flow.engine.worker import worker_main
    code = worker_main(request["endpoint"], request["worker_id"], request["step"],
                       request.get("keys"))
    import zmq
    zmq.Context.instance().term()   # its last messages (BYE) leave before the process does
    exit_fast(code)


def exit_fast(code: int) -> None:
    """Leave as an ordinary exit would (atexit handlers, buffers flushed), minus the interpreter's
    teardown of every module (0.1-0.2 s with numba and PyTables loaded, which the router waits
    for). A step that left threads running gets the ordinary exit, which waits for them."""
    import threading
    if threading.active_count() > 1:
        raise SystemExit(code)
    import atexit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 1)


def wants_kernels(request: dict) -> bool:
    """Whether a worker request waits for the template's kernels: a stager's, or an unknown kind's
    (producers and consumers run no jitted kernels as a rule; one that does loads its own)."""
    return request.get("kind") not in ("producer", "consumer")


def serve(reply_fd: int, status_dir: str | None = None, load_kernels=None) -> None:
    """Fork a worker per request on stdin until it closes. ``load_kernels`` (called once, at the
    first request for a stager, or one of unknown kind): producers and consumers, which run no
    jitted kernels as a rule, are forked without waiting for it (and without its memory)."""
    global _STATUS_DIR
    _STATUS_DIR = status_dir
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the router coordinates shutdown
    reply = os.fdopen(reply_fd, "w", buffering=1)
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            reply.write("error: malformed request\n")
            continue
        if load_kernels is not None and wants_kernels(request):
            load_kernels()
            load_kernels = None
        try:
            pid = os.fork()
        except OSError as exc:
            reply.write(f"error: fork failed: {exc}\n")
            continue
        if pid == 0:
            try:
                _child(request, reply_fd)
            except SystemExit:
                raise
            except BaseException:   # never back into the zygote's loop
                import traceback
                traceback.print_exc()
                os._exit(1)
        reply.write(f"{pid}\n")


class ForkedProcess:
    """A worker forked by the zygote (not our child): ``poll``, ``kill`` and ``wait`` by pid, as
    `subprocess.Popen` offers them. The zygote reaps it and records its exit code in
    ``status_dir``; -1 stands for a code that never arrived (a zygote that died first).

    Its pid arrives with the zygote's reply, which ``poll`` reads when it is there and ``pid``
    (or ``kill``) waits for: the router goes on serving the workers already started while the
    template loads the kernels before forking its first stager. A refused request (the fork
    failed, the template died) is a worker that exited with -1."""

    GRACE_POLLS = 20   # polls of a gone worker without a recorded code before -1 is assumed

    def __init__(self, pid: int | None, status_dir: str | None = None, template=None):
        self._pid = pid
        self.status_dir = status_dir
        self.returncode: int | None = None
        self.error: str | None = None
        self._template = template
        self._unrecorded = 0

    @property
    def pid(self) -> int | None:
        """The worker's pid (waits for the template's reply); None if it was refused."""
        if self._pid is None and self.error is None and self._template is not None:
            self._template.resolve(self, block=True)
        return self._pid

    def _replied(self, line: str) -> None:
        if line.isdigit():
            self._pid = int(line)
        else:
            self.error = line or "the worker template exited"
            self.returncode = -1

    def poll(self) -> int | None:
        if self._pid is None and self.error is None and self._template is not None:
            self._template.resolve(self, block=False)
        if self.returncode is None and self._pid is not None:
            try:
                os.kill(self._pid, 0)
                with open(f"/proc/{self._pid}/stat", "rb") as f:   # a zombie is gone
                    gone = f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
            except ProcessLookupError:
                gone = True
            except OSError:   # no /proc (macOS) or not ours to signal: alive as far as we know
                gone = False
            if gone:
                self.returncode = read_exit(self.status_dir, self._pid)
                self._unrecorded += 1
                if self.returncode is None and (not self.status_dir
                                                or self._unrecorded > self.GRACE_POLLS):
                    self.returncode = -1
        return self.returncode

    def kill(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self._pid}", timeout)
            time.sleep(0.01)
        return self.returncode


class Zygote:
    """Client of a `flow.engine.zygote` process: starts it (a fresh interpreter importing
    ``modules``) and asks it for workers. Requests are written at once and answered in order;
    each `ForkedProcess` learns its pid when it needs it (`resolve`)."""

    def __init__(self, modules: list[str], env: dict):
        self.status_dir = tempfile.mkdtemp(prefix="flow-zygote-")
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flow.engine.zygote", "--reply-fd", str(w),
                 "--status-dir", self.status_dir, *modules],
                env=env, stdin=subprocess.PIPE, pass_fds=(w,), text=True)
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
        self._replies: int | None = r
        self._buffer = b""
        self._waiting: collections.deque[ForkedProcess] = collections.deque()

    def start(self, endpoint: str, worker_id: str, step: str, keys_dir: str | None,
              kind: str | None = None) -> ForkedProcess:
        """A worker being forked; OSError if the zygote is gone. ``kind``: the step's (producer,
        stager, consumer), None if unknown (treated as a stager)."""
        request = {"endpoint": endpoint, "worker_id": worker_id, "step": step, "keys": keys_dir,
                   "kind": kind}
        if self._replies is None or self.proc.poll() is not None:
            raise OSError("the worker template exited")
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise OSError(f"the worker template exited ({exc})") from None
        proc = ForkedProcess(None, self.status_dir, template=self)
        self._waiting.append(proc)
        return proc

    def resolve(self, proc: ForkedProcess, block: bool) -> None:
        """Hand out the replies that have arrived, in the order of the requests, until ``proc``
        has its own (``block``: wait for it; a template gone answers every request refused)."""
        while proc in self._waiting:
            line = self._line(block)
            if line is None:
                return
            self._waiting.popleft()._replied(line)

    def _line(self, block: bool) -> str | None:
        while b"\n" not in self._buffer:
            if self._replies is None:
                return ""
            if not block and not select.select([self._replies], [], [], 0)[0]:
                return None
            chunk = os.read(self._replies, 4096)
            if not chunk:   # the template exited
                os.close(self._replies)
                self._replies = None
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def close(self, wait_s: float = 0.5) -> None:
        """Stop the template (the workers it started go on until their router is gone); one
        still busy after ``wait_s`` is killed."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        while self._waiting:   # every pid it sent, so that the caller can still kill them
            self.resolve(self._waiting[-1], block=True)
        if self._replies is not None:
            os.close(self._replies)
            self._replies = None
        try:   # it leaves at once; it holds nothing, so a slow exit is cut short (a run's end)
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.status_dir, ignore_errors=True)


def _with_base(step_modules) -> list[str]:
    """numpy, zmq, msgpack, then each of ``step_modules`` once, in order (empty names and
    ``__main__`` left out)."""
    modules = ["numpy", "zmq", "msgpack"]
    for module in step_modules:
        if module and module != "__main__" and module not in modules:
            modules.append(module)
    return modules


def preload_modules(graph) -> list[str]:
    """The modules a zygote imports for ``graph``: numpy, zmq and each step's module."""
    from flow.graph.model import resolve_use

    def module_of(spec):
        try:
            return getattr(resolve_use(spec.use), "__module__", None)
        except Exception:   # validation reports it; the worker will too
            return None
    return _with_base(module_of(spec) for spec in getattr(graph, "steps", ()))


def yaml_modules(text: str) -> list[str] | None:
    """`preload_modules` of a pipeline file's text, from its ``use`` strings alone (nothing
    imported, nothing validated), or None where no template runs for it (``router: {start_method:
    spawn}``, or text that is not a pipeline). Short names and objects are left to the workers."""
    import yaml
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return None
    router = data.get("router") or {}
    if not isinstance(router, dict) or router.get("start_method", "zygote") != "zygote":
        return None
    uses = [step.get("use") for step in data["steps"] if isinstance(step, dict)]
    return _with_base(use.partition(":")[0] if ":" in use else use.rpartition(".")[0]
                      for use in uses if isinstance(use, str))


def early_template(path, env: dict) -> Zygote | None:
    """The worker template for the pipeline file ``path``, started from its text before the graph
    is loaded (`flow run`): validating imports every step's module in the router's process (a third
    of a second on the demo), and the template's own imports and kernels overlap it. None where no
    template runs; the run checks the validated graph again (`flow.engine.run.run`)."""
    if not hasattr(os, "fork"):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            modules = yaml_modules(f.read())
    except (OSError, UnicodeDecodeError):
        return None
    if modules is None:
        return None
    try:
        return Zygote(modules, env)
    except OSError:
        return None


def start_template(graph, env: dict) -> Zygote | None:
    """The worker template for ``graph``, importing its modules in the background from now on
    (`flow.engine.run` starts it before asking the producers for their context, so that the two
    overlap), or None where it cannot run (no fork, ``start_method: spawn``, it fails to start)."""
    if not hasattr(os, "fork") or getattr(graph.router, "start_method", "zygote") != "zygote":
        return None
    try:
        return Zygote(preload_modules(graph), env)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m flow.engine.zygote", description=__doc__)
    p.add_argument("--reply-fd", type=int, required=True)
    p.add_argument("--status-dir", help="where to record each worker's exit code")
    p.add_argument("modules", nargs="*")
    a = p.parse_args(argv)
    from flow.engine.memory import default_numba_cache, tune_malloc
    tune_malloc()
    default_numba_cache()
    preload(["flow.engine.worker", *a.modules])
    from flow.engine.kernels import load_used
    # the kernels earlier workers ran, from numba's cache (no stager loads them again), at the
    # first stager's request
    serve(a.reply_fd, a.status_dir, load_kernels=load_used)
    exit_fast(0)   # it holds nothing to close: no teardown of its modules (0.2 s per run's end)


if __name__ == "__main__":
    sys.exit(main())
