"""``flow gui --connect ADDR``: the Qt monitor on a running pipeline (the ``gui`` package).

The options are declared here, so ``flow --help`` does not import Qt; `gui.app.build_parser`
declares the same ones for ``python -m gui.app`` (a test holds the two equal).
"""

from __future__ import annotations

import argparse

from flow.cli.common import Command


def gui_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="ADDR",
                   help="monitor address of the run, e.g. tcp://127.0.0.1:5560 (`flow run` prints it)")
    p.add_argument("--control", metavar="ADDR",
                   help="control address (enables pause, scale, drain, stop, tap)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the run's control token")
    p.add_argument("--keys", metavar="DIR", help="directory of CURVE keys, when the run uses them")
    p.add_argument("--window", type=float, default=300.0, metavar="S",
                   help="seconds shown in the plots (default 300)")
    p.add_argument("--screenshot", metavar="PNG", help="save the window to this PNG before exiting")
    p.add_argument("--exit-after", type=float, metavar="S", help="quit after this many seconds")
    p.add_argument("--nice", type=int, default=10,
                   help="niceness added to the GUI process (default 10), so the monitor yields "
                        "the CPU to the pipeline (0: no change)")


def cmd_gui(args: argparse.Namespace) -> int:
    from gui.app import main as gui_main
    return gui_main(args=args)


COMMAND = Command("gui", "open the Qt monitor on a running pipeline",
                  "flow gui --connect tcp://127.0.0.1:5560", gui_arguments, cmd_gui)
