"""``flow gui --connect ADDR``: the Qt monitor on a running pipeline (the ``gui`` package)."""

from __future__ import annotations

import argparse

from flow.cli.common import Command


def _gui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("gui_args", nargs=argparse.REMAINDER,
                   help="--connect ADDR [--control ADDR] [--token-file F] [--keys DIR] "
                        "[--screenshot PATH --exit-after S]")


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import main as gui_main
    return gui_main(args.gui_args)


COMMAND = Command("gui", "open the Qt monitor on a running pipeline",
                  "flow gui --connect tcp://127.0.0.1:5560", _gui_arguments, cmd_gui)
