"""``flow keys generate DIR``: CURVE key pairs for multi-host runs."""

from __future__ import annotations

import argparse

from flow.cli.common import Command


def _keys_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["generate"], help="what to do")
    p.add_argument("dir", metavar="DIR", help="directory for the key pairs")


def cmd_keys(args: argparse.Namespace) -> int:
    from flow.wire.security import generate_keys
    paths = generate_keys(args.dir)
    for p in (paths.values() if isinstance(paths, dict) else paths):
        print(p)
    return 0


COMMAND = Command("keys", "make CURVE key pairs for multi-host runs",
                  "flow keys generate ~/.flow/keys", _keys_arguments, cmd_keys)
