"""``flow agent``: run workers on this host for a router on another one (see flow/engine/agent.py and
docs/deploy.md). One function plus its `COMMAND` (see flow/cli/app.py)."""

from __future__ import annotations

import argparse
import logging

from flow.cli.common import Command


def _agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connect", required=True, metavar="ENDPOINT",
                   help="the router's data endpoint, tcp://HOST:PORT (its --bind)")
    p.add_argument("--cpus", type=int, default=None, metavar="N",
                   help="workers this agent may run at once (default: this host's cores)")
    p.add_argument("--keys", metavar="DIR",
                   help="CURVE keys (server.key, client.key, client.key_secret) from "
                        "`flow keys generate DIR` on the router host")
    p.add_argument("--name", metavar="NAME", help="name shown by the router (default: HOST:PID)")
    p.add_argument("--orphan-timeout", type=float, default=None, metavar="S",
                   help="kill the workers when the router has been silent this long "
                        "(default: 2 x liveness x heartbeat_s of the router)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every worker started/ended")


def cmd_agent(args: argparse.Namespace) -> int:
    import os

    from flow.engine.agent import Agent
    from flow.errors import ConfigError
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s flow agent: %(message)s")
    cpus = args.cpus if args.cpus is not None else (os.cpu_count() or 1)
    if cpus < 1:
        raise ConfigError(f"--cpus must be at least 1, not {cpus}")
    if "://" not in args.connect:
        raise ConfigError(f"not a ZeroMQ endpoint: {args.connect!r}",
                          hint="write it as tcp://HOST:PORT")
    agent = Agent(args.connect, cpus, keys_dir=args.keys, name=args.name,
                  orphan_timeout_s=args.orphan_timeout)
    return agent.run()


COMMAND = Command("agent", "run workers on this host for a router on another host, on demand",
        "flow agent --connect tcp://router-host:5555 --cpus 16 --keys ~/.flow/keys",
        _agent_arguments, cmd_agent)
