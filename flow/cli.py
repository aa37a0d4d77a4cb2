"""The ``flow`` command line.

One function per subcommand (``cmd_validate(args) -> int``...) and one `Command` entry per
subcommand in `COMMANDS` (or in a module listed in `EXTENSIONS`, like ``flow.cli_run``);
`build_parser` makes the subparsers from those lists, so adding a subcommand is one function plus
one entry. Configuration errors print as ``FILE:LINE: message (hint)``
on stderr and exit with `EXIT_CONFIG`. The current directory is put on ``sys.path`` (as
``python -m`` does), so ``use: mypkg.mod:Name`` finds modules next to where ``flow`` is run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ConfigError, FlowError
from .graph import Graph

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


# ---------------------------------------------------------------------------------------------
# Shared arguments


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
    from .config import load_graph

    return load_graph(args.file, getattr(args, "overrides", ()), getattr(args, "workers", ()))


def print_config_errors(exc: ConfigError, file=None) -> None:
    """Each error as ``FILE:LINE: message (hint)``, one per line (stderr by default)."""
    out = file or sys.stderr
    for error in getattr(exc, "errors", [exc]):
        print(error, file=out)


# ---------------------------------------------------------------------------------------------
# Subcommands


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def cmd_validate(args: argparse.Namespace) -> int:
    graph = load_from_args(args)
    print(f"{args.file}: ok ({len(graph.steps)} steps)")
    return EXIT_OK


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="output format (default: mermaid)",
    )
    parser.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def cmd_graph(args: argparse.Namespace) -> int:
    from .render import to_dot, to_mermaid

    graph = load_from_args(args)
    text = to_dot(graph) if args.format == "dot" else to_mermaid(graph)
    _write(text, args.output)
    return EXIT_OK


def _show_config_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def cmd_show_config(args: argparse.Namespace) -> int:
    from .render import show_config

    _write(show_config(load_from_args(args)), args.output)
    return EXIT_OK


def _write(text: str, path: str | None) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


COMMANDS: list[Command] = [
    Command(
        "validate",
        "check a pipeline file without starting anything",
        "flow validate configs/demo.yaml",
        _validate_arguments,
        cmd_validate,
    ),
    Command(
        "graph",
        "draw the pipeline as Mermaid or Graphviz DOT",
        "flow graph configs/demo.yaml --format dot | dot -Tsvg > demo.svg",
        _graph_arguments,
        cmd_graph,
    ),
    Command(
        "show-config",
        "print every option in effect as commented YAML",
        "flow show-config configs/demo.yaml --set clean.picture_thresh=8",
        _show_config_arguments,
        cmd_show_config,
    ),
]


# ---------------------------------------------------------------------------------------------
# Parser and entry point


#: Modules adding subcommands, as (module, list attribute); imported when the parser is built, so
#: they may import this module for `Command`, `add_config_arguments` and `load_from_args`.
EXTENSIONS: list[tuple[str, str]] = [("flow.cli_run", "RUN_COMMANDS"),
                                     ("flow.cli_agent", "AGENT_COMMANDS")]


def all_commands() -> list[Command]:
    """`COMMANDS` plus the commands of every module in `EXTENSIONS` that is present."""
    commands = list(COMMANDS)
    for module_name, attr in EXTENSIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        commands += getattr(module, attr)
    return commands


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
