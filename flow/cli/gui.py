"""``flow gui --connect ADDR``: the Qt monitor on a running pipeline (the ``gui`` package).

The options are declared once, in gui/options.py (no Qt import, so ``flow --help`` stays light);
``python -m gui.app`` takes the same ones.
"""

from __future__ import annotations

import argparse

from flow.cli.common import Command


def gui_arguments(p: argparse.ArgumentParser) -> None:
    from gui.options import add_options
    add_options(p)


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import main as gui_main
    return gui_main(args=args)


COMMAND = Command("gui", "open the Qt monitor on a running pipeline",
                  "flow gui --connect tcp://127.0.0.1:5560", gui_arguments, cmd_gui)
