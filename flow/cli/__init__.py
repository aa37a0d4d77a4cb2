"""The ``flow`` command line: one module per subcommand, `main` in flow/cli/app.py.

It sits on top of everything: it may import any package of ``flow`` (and ``gui`` for ``flow gui``);
nothing of ``flow`` imports it.
"""

from flow.cli.app import build_parser, main
from flow.cli.common import EXIT_CODES, Command

__all__ = ["EXIT_CODES", "Command", "build_parser", "main"]
