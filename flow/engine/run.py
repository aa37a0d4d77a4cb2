"""Running a graph: the producers' context, the router with its worker processes, the monitor
sockets, the terminal view, signals, and the summary. `flow run` is a thin layer over `run`."""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from flow.engine.deadletter import DeadLetterFile
from flow.engine.inline import run_inline
from flow.engine.memory import default_numba_cache
from flow.errors import ConfigError, RunError
from flow.graph.model import Graph, resolve_use
from flow.graph.step import instantiate
from flow.observe.summary import RunSummary
from flow.wire import codec

log = logging.getLogger("flow.run")


@dataclass
class RunOptions:
    """How to run a graph (the `flow run` flags)."""

    inline: bool = False
    quiet: bool = False
    view: bool = True
    summary_json: str | None = None
    stats_jsonl: str | None = None
    bind: str | None = None                 # data endpoint; default: ipc:// in a private dir
    monitor: str = "tcp://127.0.0.1:0"
    control: str = "tcp://127.0.0.1:0"
    keys_dir: str | None = None
    insecure: bool = False
    resume: bool = False
    gui: bool = False
    metrics_port: int | None = None
    run_dir: str | None = None
    scale: bool = True
    print_summary: bool = True              # the end-of-run table (also with quiet)
    shard: tuple[int, int] | None = None    # (i, n): this run keeps the keys hashing to i mod n
    on_start: object = None                 # callback(router, publisher) once sockets are bound
    template: object = None                 # a worker template started already (`flow run`)


def use_spec(obj) -> str:
    """``module:qualname`` of a step class or function, to send to workers."""
    obj = resolve_use(obj)
    return f"{obj.__module__}:{obj.__qualname__}"


def prepare_context(graph: Graph, resume: bool = False, shard: tuple[int, int] | None = None
                    ) -> tuple[dict, int | None]:
    """Instantiate each producer here once to collect its context and its total (if known)."""
    context: dict = {}
    total = 0
    known = True
    for spec in graph.producers:
        step = instantiate(resolve_use(spec.use), "producer", spec.name, spec.param_dict)
        context.update(step.publish_context() or {})
        n = step.total()
        if n is None:
            known = False
        else:
            total += n
    if resume:
        context["flow.resume"] = True
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ConfigError(f"shard {i}/{n}: need 0 <= I < N", hint="e.g. --shard 0/4")
        context["flow.shard"] = [i, n]
        if known:  # about 1/n of the events (hash-based, so approximately)
            total = (total + n - 1 - i) // n
    return context, (total if known else None)


def run(graph: Graph, options: RunOptions | None = None) -> RunSummary:
    """Run ``graph`` to completion and return its summary (also written as JSON if asked)."""
    options = options or RunOptions()
    default_numba_cache()   # in effect if numba is not loaded yet (an inline run's steps)
    zygote = options.template
    if zygote is not None and (options.inline or
                               getattr(graph.router, "start_method", "zygote") != "zygote"):
        zygote.close(wait_s=0)   # started from the file's text, but the run uses none
        zygote = None
    if options.inline:
        context, total = prepare_context(graph, options.resume, options.shard)
        summary = _run_inline(graph, context)
    else:
        # the worker template imports the steps' modules while this process asks the producers
        # for their context (a file's subarray: seconds for 100+ telescopes): the two overlap.
        # Not imported at the top: `python -m flow.engine.zygote` imports `flow`, so this module.
        if zygote is None:
            from flow.engine.launcher import local_env
            from flow.engine.zygote import start_template
            zygote = start_template(graph, local_env())
        try:
            context, total = prepare_context(graph, options.resume, options.shard)
            summary = _run_router(graph, context, total, options, zygote)
        finally:
            if zygote is not None:   # the launcher has closed it, unless the run did not start
                zygote.close()
    if options.summary_json:
        summary.write_json(options.summary_json)
    return summary


def _run_inline(graph: Graph, context: dict) -> RunSummary:
    stop = {"n": 0}

    def on_signal(signum, frame):
        stop["n"] += 1
        if stop["n"] > 1:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_signal)
    try:
        return run_inline(graph, context, DeadLetterFile(graph.router.dead_letter, graph.file),
                          stop=lambda: stop["n"] > 0)
    finally:
        signal.signal(signal.SIGINT, old)


def _run_router(graph: Graph, context: dict, total: int | None, options: RunOptions,
                zygote=None) -> RunSummary:
    own_dir = not options.run_dir      # a private temporary directory, removed at the end
    run_dir = Path(options.run_dir or tempfile.mkdtemp(prefix="flow-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run_in(run_dir, graph, context, total, options, zygote)
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_in(run_dir: Path, graph: Graph, context: dict, total: int | None,
            options: RunOptions, zygote=None) -> RunSummary:
    import zmq

    from flow.engine.router import Router
    from flow.observe.publisher import Publisher
    from flow.observe.stats import RateMeter, stats_record
    from flow.observe.termview import TermView

    endpoint = options.bind or f"ipc://{run_dir}/data.sock"
    if options.bind:
        from flow.wire.security import check_bind_policy
        check_bind_policy(options.bind, options.keys_dir, options.insecure)
    ctx = zmq.Context.instance()
    context_frames = codec.encode(context) if context else []
    run_id = uuid.uuid4().hex[:12]
    router = Router(graph, endpoint, context_frames=context_frames,
                    dead_letter=DeadLetterFile(graph.router.dead_letter, graph.file),
                    ctx=ctx, keys_dir=options.keys_dir,
                    use_specs={s.name: use_spec(s.use) for s in graph.steps}, zygote=zygote)
    from flow.wire import shm
    if graph.router.shm_threshold > 0 and endpoint.startswith("ipc://") and shm.available():
        router.enable_shm(f"flow-{run_id}-", graph.router.shm_threshold)
    publisher = Publisher(ctx, graph, run_id, options.monitor, options.control,
                          run_dir / "control.token", context_frames, security=router.security,
                          stats_jsonl=options.stats_jsonl)
    publisher.attach(router)
    view = TermView(quiet=options.quiet or not options.view)
    meter = RateMeter()
    scaler = _make_scaler(graph, router) if options.scale else None
    metrics = None
    if options.metrics_port:
        from flow.observe.prometheus import MetricsExporter
        metrics = MetricsExporter(options.metrics_port)

    def on_tick(r: Router) -> None:
        decisions = scaler(r) if scaler is not None else []
        record = stats_record(r, meter, run_id, total, decisions, r.dead_letter.take_recent(),
                              r.take_restart_decisions())
        publisher.publish_stats(record)
        view.update(record)
        if metrics is not None:
            metrics.update(record)

    router.on_tick = on_tick
    signals = {"n": 0}

    def on_signal(signum, frame):
        signals["n"] += 1
        router.signal_count = signals["n"]

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    if not options.quiet:
        view.console.print(f"[dim]monitor {publisher.monitor_endpoint} · control "
                           f"{publisher.control_endpoint} · token {publisher.token_file}[/dim]")
    try:
        router.start()
        if options.gui:
            _start_gui(publisher)
        if callable(options.on_start):
            options.on_start(router, publisher)
        try:
            router.run()
        except Exception as exc:  # a router bug: its workers are stopped by router.run's finally
            log.exception("the router crashed")
            raise RunError(f"the router crashed ({type(exc).__name__}: {exc}); the outputs hold "
                           f"every acknowledged event: run again with --resume to complete the "
                           f"run") from exc
        on_tick(router)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        view.close()
        publisher.close()
        # the GUI stays open on the finished run (it shows "finished · not running")
    summary = RunSummary(
        produced=router.produced,
        consumed={c.name: router.steps[c.name].n_done for c in graph.consumers},
        unique_consumed={c.name: router.steps[c.name].n_done - router.steps[c.name].n_dups
                         for c in graph.consumers},
        dead_letter=router.dead_letter.count,
        retries=sum(st.retries for st in router.steps.values()),
        errors=sum(st.errors for st in router.steps.values()),
        wall_s=router.finished_t - router.started_at,
        eos_exit_s=(router.finished_t - router.last_event_t) if router.last_event_t else None,
        workers_started=router.workers_started, workers_retired=router.workers_retired,
        rejected=router.rejected, state=router.state,
        failures=router.failure_reasons(), warnings=list(router.input_warnings),
        restarts={name: st.restarts for name, st in router.steps.items() if st.restarts},
        dead_letter_file=str(router.dead_letter.path) if router.dead_letter.count else None,
    )
    summary.decide_exit_code()
    if options.print_summary:
        view.print_summary(summary)  # `--quiet` prints only this summary
    return summary


def _make_scaler(graph: Graph, router):
    """The auto-scaler as a tick callback, or None when every stager has a fixed worker count."""
    if all(s.workers.min == s.workers.max for s in graph.steps if s.kind == "stager"):
        return None
    from flow.engine.scale_driver import AutoScaler
    return AutoScaler(graph, router)


def _start_gui(publisher) -> None:
    """The Qt monitor in its own process; it stays open on the finished run."""
    import subprocess
    import sys
    subprocess.Popen([sys.executable, "-m", "gui.app", "--connect",
                             publisher.monitor_endpoint, "--control", publisher.control_endpoint,
                             "--token-file", str(publisher.token_file)])


__all__ = ["RunOptions", "run", "prepare_context", "use_spec"]
