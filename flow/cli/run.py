"""``flow run FILE``: run a pipeline with a router and worker processes (or ``--inline``)."""

from __future__ import annotations

import argparse

from flow.cli.common import Command, add_config_arguments, load_from_args


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


def _options(args: argparse.Namespace, template=None):
    from flow.engine.run import RunOptions
    return RunOptions(inline=args.inline, quiet=args.quiet, summary_json=args.summary_json,
                      stats_jsonl=args.stats_jsonl, bind=args.bind, monitor=args.monitor,
                      control=args.control, keys_dir=args.keys, insecure=args.insecure,
                      resume=args.resume, gui=args.gui, metrics_port=args.metrics_port,
                      scale=not args.no_scale, shard=args.shard, template=template)


def cmd_run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flow.engine.launcher import local_env
    from flow.engine.run import run
    from flow.engine.zygote import early_template
    # the worker template starts from the file's text, while the graph is loaded and validated
    template = None if args.inline else early_template(args.file, local_env())
    try:
        graph = load_from_args(args)
    except BaseException:
        if template is not None:
            template.close(wait_s=0)
        raise
    if args.dead_letter:
        graph = replace(graph, router=replace(graph.router, dead_letter=args.dead_letter))
    return run(graph, _options(args, template)).exit_code


COMMAND = Command("run", "run a pipeline with a router and worker processes (live view, then summary)",
                  "flow run configs/demo.yaml --workers clean=1:4 --summary-json out/summary.json",
        _run_arguments, cmd_run)
