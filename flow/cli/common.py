"""What every subcommand shares: exit codes, the `Command` record, the FILE/--set/--workers
arguments and how configuration errors print (``FILE:LINE: message (hint)``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from flow.errors import ConfigError
from flow.graph.model import Graph

EXIT_OK = 0
EXIT_PARTIAL = 1  # the run finished, but some events went to the dead-letter file
EXIT_CONFIG = 2  # the pipeline description is wrong (nothing was started)
EXIT_RUN_FAILED = 3  # the run could not go on (router died, worker could not start...)
EXIT_ABORTED = 130  # aborted by a second SIGINT/SIGTERM (or Ctrl-C before the run started)

#: Every exit code of ``flow`` and what it means.
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_PARTIAL: "partial: the run finished but some events went to the dead-letter file",
    EXIT_CONFIG: "configuration error: nothing was started",
    EXIT_RUN_FAILED: "the run failed",
    EXIT_ABORTED: "aborted",
}


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, a usage example, its arguments and its function."""

    name: str
    help: str
    example: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """FILE plus ``--set STEP.PARAM=VALUE`` and ``--workers STEP=N|MIN:MAX`` (repeatable)."""
    parser.add_argument("file", metavar="FILE", help="pipeline YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="STEP.PARAM=VALUE",
        help="override a step parameter (YAML value)",
    )
    parser.add_argument(
        "--workers",
        dest="workers",
        action="append",
        default=[],
        metavar="STEP=N|MIN:MAX",
        help="override a step's worker bounds",
    )


def load_from_args(args: argparse.Namespace) -> Graph:
    """Load and validate ``args.file`` with the ``--set`` and ``--workers`` overrides."""
    from flow.graph.loader import load_graph

    return load_graph(args.file, getattr(args, "overrides", ()), getattr(args, "workers", ()))


def print_config_errors(exc: ConfigError, file=None) -> None:
    """Each error as ``FILE:LINE: message (hint)``, one per line (stderr by default)."""
    out = file or sys.stderr
    for error in getattr(exc, "errors", [exc]):
        print(error, file=out)


def write_text(text: str, path: str | None) -> None:
    """Write ``text`` to ``path``, or to stdout when no path is given."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
