"""A warm template for worker processes: one fresh interpreter that imports what workers need,
then forks a worker per request (``python -m flow.engine.zygote MODULE...``).

Spawning each worker as a new interpreter costs every worker the imports of numpy, numba, astropy
and the steps' modules (1.5-2.5 s of CPU each on the DL2 graph). The zygote pays them once: it is
itself started as a fresh interpreter (nothing of the router is inherited: no sockets, no ZeroMQ
context, no threads of the parent) and imports the modules it is given, *without* creating any
ZeroMQ context, instantiating any step or starting a thread of its own. Each worker is then a fork
of that clean, single-threaded template, which re-seeds its random generators and runs
`flow.engine.worker.worker_main` as a spawned worker would.

Requests arrive on stdin, one JSON line ``{"endpoint", "worker_id", "step", "keys"}``; the zygote
answers on the file descriptor given by ``--reply-fd`` with one line, the worker's pid (or
``error: ...``). The zygote reaps its children; it exits when stdin closes (its launcher is gone),
leaving running workers to end on their own (they leave once their router is silent).
`flow.engine.launcher.Zygote` is the client side.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys


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


def _reap(signum=None, frame=None) -> None:
    try:
        while True:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
    except ChildProcessError:
        return


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
    raise SystemExit(code)          # an ordinary exit, as a spawned worker's (atexit, buffers)


def serve(reply_fd: int) -> None:
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the router coordinates shutdown
    reply = os.fdopen(reply_fd, "w", buffering=1)
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            reply.write("error: malformed request\n")
            continue
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


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m flow.engine.zygote", description=__doc__)
    p.add_argument("--reply-fd", type=int, required=True)
    p.add_argument("modules", nargs="*")
    a = p.parse_args(argv)
    from flow.engine.memory import tune_malloc
    tune_malloc()
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache",
                                                          "flow-iact", "numba"))
    preload(["flow.engine.worker", *a.modules])
    serve(a.reply_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
