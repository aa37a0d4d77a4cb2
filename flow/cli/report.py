"""``flow report RUN.jsonl``: PNG plots of a finished run's statistics."""

from __future__ import annotations

import argparse

from flow.cli.common import Command


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stats", metavar="RUN.jsonl", help="statistics written by --stats-jsonl")
    p.add_argument("-o", "--output", default="report", metavar="DIR", help="output directory")


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flow.observe.report import make_report
    for path in make_report(args.stats, args.output):
        print(path)
    outcome = Path(args.output) / "outcome.txt"    # the state, failures and restarts
    print(outcome.read_text(), end="")
    return 0


COMMAND = Command("report", "plot rates, queues and workers of a finished run as PNG",
                  "flow report out/stats.jsonl -o out/report", _report_arguments, cmd_report)
