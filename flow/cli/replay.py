"""``flow replay DEADLETTER``: re-run the events of a dead-letter file once the step is fixed."""

from __future__ import annotations

import argparse
import sys

from flow.cli.common import Command


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("deadletter", metavar="DEADLETTER", help="dead-letter file of an earlier run")
    p.add_argument("--graph", metavar="FILE", help="pipeline file (default: the one recorded)")
    p.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE")
    p.add_argument("--workers", action="append", default=[], metavar="STEP=N")
    p.add_argument("--inline", action="store_true", help="replay in this one process")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--summary-json", metavar="PATH")


def cmd_replay(args: argparse.Namespace) -> int:
    from flow.engine.deadletter import read_dead_letters
    from flow.engine.replay import replay_graph
    from flow.engine.run import RunOptions, run
    from flow.errors import DataError
    from flow.graph.loader import load_graph
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


COMMAND = Command("replay", "re-run the events of a dead-letter file once the step is fixed",
                  "flow replay flow-deadletter.jsonl", _replay_arguments, cmd_replay)
