"""The options of the Qt monitor, declared once for ``flow gui`` (flow/cli/gui.py) and for
``python -m gui.app``. No Qt import here, so ``flow --help`` stays light."""

from __future__ import annotations

import argparse


def add_options(p: argparse.ArgumentParser) -> None:
    """``--connect ADDR`` and the other options of the monitor."""
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
