"""``flow graph FILE``: draw the pipeline as Mermaid or Graphviz DOT."""

from __future__ import annotations

import argparse

from flow.cli.common import EXIT_OK, Command, add_config_arguments, load_from_args, write_text


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
    from flow.graph.render import to_dot, to_mermaid

    graph = load_from_args(args)
    text = to_dot(graph) if args.format == "dot" else to_mermaid(graph)
    write_text(text, args.output)
    return EXIT_OK


COMMAND = Command(
    "graph",
    "draw the pipeline as Mermaid or Graphviz DOT",
    "flow graph configs/demo.yaml --format dot | dot -Tsvg > demo.svg",
    _graph_arguments,
    cmd_graph,
)
