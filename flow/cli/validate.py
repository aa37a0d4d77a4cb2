"""``flow validate FILE``: load and check a pipeline file without starting anything."""

from __future__ import annotations

import argparse

from flow.cli.common import EXIT_OK, Command, add_config_arguments, load_from_args


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def cmd_validate(args: argparse.Namespace) -> int:
    graph = load_from_args(args)
    print(f"{args.file}: ok ({len(graph.steps)} steps)")
    return EXIT_OK


COMMAND = Command(
    "validate",
    "check a pipeline file without starting anything",
    "flow validate configs/demo.yaml",
    _validate_arguments,
    cmd_validate,
)
