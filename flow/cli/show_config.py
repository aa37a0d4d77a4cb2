"""``flow show-config FILE``: every option in effect, as commented YAML."""

from __future__ import annotations

import argparse

from flow.cli.common import EXIT_OK, Command, add_config_arguments, load_from_args, write_text


def _show_config_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def cmd_show_config(args: argparse.Namespace) -> int:
    from flow.graph.render import show_config

    write_text(show_config(load_from_args(args)), args.output)
    return EXIT_OK


COMMAND = Command(
    "show-config",
    "print every option in effect as commented YAML",
    "flow show-config configs/demo.yaml --set clean.picture_thresh=8",
    _show_config_arguments,
    cmd_show_config,
)
