"""``flow run``, ``flow replay``, ``flow keys``, ``flow gui``, ``flow report``: the subcommands that
start things. Each is one function plus one `Command` entry in `RUN_COMMANDS` (see flow/cli.py)."""

from __future__ import annotations

import argparse
import sys

from .cli import Command, add_config_arguments, load_from_args


def _run_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--inline", action="store_true",
                   help="run every step in this one process (debugging: pdb works)")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.add_argument("--summary-json", metavar="PATH", help="write the run summary as JSON")
    p.add_argument("--stats-jsonl", metavar="PATH",
                   help="write every statistics record as a JSON line (for `flow report`)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: consumers keep what they already hold")
    p.add_argument("--bind", metavar="ENDPOINT",
                   help="data endpoint for workers and agents (default: a private ipc:// socket); "
                        "non-loopback addresses need --keys or --insecure")
    p.add_argument("--monitor", metavar="ENDPOINT", default="tcp://127.0.0.1:0",
                   help="statistics PUB endpoint (default: a free loopback port, printed)")
    p.add_argument("--control", metavar="ENDPOINT", default="tcp://127.0.0.1:0",
                   help="control endpoint (pause, scale, stop; token-protected)")
    p.add_argument("--keys", metavar="DIR", help="CURVE keys made by `flow keys generate DIR`")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback bind without CURVE keys (prints a warning)")
    p.add_argument("--gui", action="store_true", help="open the Qt monitor on this run")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="expose the statistics to Prometheus on this port")
    p.add_argument("--no-scale", action="store_true",
                   help="keep every stager at its minimum worker count (no auto-scaling)")
    p.add_argument("--dead-letter", metavar="PATH", help="dead-letter file (default: router option)")
    p.add_argument("--shard", metavar="I/N", type=_shard,
                   help="run shard I of N: keep only the events whose key hashes to I mod N "
                        "(N runs of the same graph, e.g. one per host, share the stream)")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"need 0 <= I < N, got {text!r}")
    return i, n


def _options(args: argparse.Namespace):
    from .run import RunOptions
    return RunOptions(inline=args.inline, quiet=args.quiet, summary_json=args.summary_json,
                      stats_jsonl=args.stats_jsonl, bind=args.bind, monitor=args.monitor,
                      control=args.control, keys_dir=args.keys, insecure=args.insecure,
                      resume=args.resume, gui=args.gui, metrics_port=args.metrics_port,
                      scale=not args.no_scale, shard=args.shard)


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .run import run
    graph = load_from_args(args)
    if args.dead_letter:
        graph = replace(graph, router=replace(graph.router, dead_letter=args.dead_letter))
    return run(graph, _options(args)).exit_code


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("deadletter", metavar="DEADLETTER", help="dead-letter file of an earlier run")
    p.add_argument("--graph", metavar="FILE", help="pipeline file (default: the one recorded)")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE")
    p.add_argument("--workers", action="append", default=[], metavar="STEP=N")
    p.add_argument("--inline", action="store_true", help="replay in this one process")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--summary-json", metavar="PATH")


def cmd_replay(args: argparse.Namespace) -> int:
    from .config import load_graph
    from .deadletter import read_dead_letters
    from .errors import DataError
    from .replay import replay_graph
    from .run import RunOptions, run
    graph_file = args.graph
    if graph_file is None:
        first = next(iter(read_dead_letters(args.deadletter)), None)
        if first is None:
            print(f"flow replay: {args.deadletter} holds no dead letters", file=sys.stderr)
            return 0
        graph_file = first.graph
        if not graph_file:
            raise DataError(f"{args.deadletter}: no pipeline file recorded; pass --graph FILE")
    graph = replay_graph(load_graph(graph_file, args.set, args.workers), args.deadletter)
    opts = RunOptions(inline=args.inline, quiet=args.quiet, summary_json=args.summary_json,
                      resume=True)
    return run(graph, opts).exit_code


def _keys_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["generate"], help="what to do")
    p.add_argument("dir", metavar="DIR", help="directory for the key pairs")


def cmd_keys(args: argparse.Namespace) -> int:
    from .security import generate_keys
    paths = generate_keys(args.dir)
    for p in (paths.values() if isinstance(paths, dict) else paths):
        print(p)
    return 0


def _gui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gui_args", nargs=argparse.REMAINDER,
                   help="--connect ADDR [--control ADDR] [--token-file F] [--keys DIR] "
                        "[--screenshot PATH --exit-after S]")


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import main as gui_main
    return gui_main(args.gui_args)


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stats", metavar="RUN.jsonl", help="statistics written by --stats-jsonl")
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="output directory")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import make_report
    for path in make_report(args.stats, args.output):
        print(path)
    return 0


RUN_COMMANDS = [
    Command("run", "run a pipeline with a router and worker processes (live view, then summary)",
            "flow run configs/demo.yaml --workers clean=1:4 --summary-json out/summary.json",
            _run_arguments, cmd_run),
    Command("replay", "re-run the events of a dead-letter file once the step is fixed",
            "flow replay flow-deadletter.jsonl", _replay_arguments, cmd_replay),
    Command("keys", "make CURVE key pairs for multi-host runs",
            "flow keys generate ~/.flow/keys", _keys_arguments, cmd_keys),
    Command("gui", "open the Qt monitor on a running pipeline",
            "flow gui --connect tcp://127.0.0.1:5560", _gui_arguments, cmd_gui),
    Command("report", "plot rates, queues and workers of a finished run as PNG",
            "flow report out/stats.jsonl -o out/report", _report_arguments, cmd_report),
]
