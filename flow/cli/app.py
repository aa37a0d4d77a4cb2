"""The ``flow`` command line: the parser and the entry point.

Each subcommand is one module of this package with a `COMMAND` (its arguments and its function);
`SUBCOMMANDS` lists them in the order ``flow --help`` shows, so adding a subcommand is one module plus
one line. Configuration errors print as ``FILE:LINE: message (hint)`` on stderr and exit with
`EXIT_CONFIG`. The current directory is put on ``sys.path`` (as ``python -m`` does), so
``use: mypkg.mod:Name`` finds modules next to where ``flow`` is run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from flow.cli.common import (
    EXIT_ABORTED,
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_RUN_FAILED,
    Command,
    print_config_errors,
)
from flow.engine.memory import default_numba_cache
from flow.errors import ConfigError, FlowError

#: The subcommand modules of this package, in the order of ``flow --help``.
SUBCOMMANDS = ("validate", "graph", "show_config", "run", "replay", "keys", "gui", "report", "agent")

#: The commands that only read a pipeline file (they start nothing).
COMMANDS: list[Command] = [importlib.import_module(f"flow.cli.{name}").COMMAND
                           for name in ("validate", "graph", "show_config")]


def all_commands() -> list[Command]:
    """Every subcommand's `Command`, in the order of `SUBCOMMANDS`."""
    return [importlib.import_module(f"flow.cli.{name}").COMMAND for name in SUBCOMMANDS]


def build_parser(commands: Sequence[Command] | None = None) -> argparse.ArgumentParser:
    """The ``flow`` parser, with one subparser per command (default: `all_commands()`)."""
    commands = all_commands() if commands is None else commands
    width = max((len(c.name) for c in commands), default=0)
    examples = "\n".join(f"  {c.name:<{width}}  {c.example}" for c in commands)
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="flow",
        description="Run graphs of processing steps over streams of Cherenkov-telescope events.",
        epilog=f"examples:\n{examples}\n\nexit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=f"example:\n  {command.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flow`` console script; returns the exit code (see `EXIT_CODES`)."""
    args = build_parser().parse_args(argv)
    default_numba_cache()   # an inline run's kernels come from the cache `make venv` filled
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return args.func(args)
    except ConfigError as exc:
        print_config_errors(exc)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("flow: aborted", file=sys.stderr)
        return EXIT_ABORTED
    except FlowError as exc:
        print(f"flow: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except BrokenPipeError:  # `flow graph ... | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
