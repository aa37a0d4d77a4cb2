"""Render a `Graph`: Mermaid and Graphviz DOT drawings, and the effective configuration as YAML.

``to_mermaid`` and ``to_dot`` draw producers, stagers and consumers with distinct shapes and show a
stager's worker bounds ("calibrate ×1–8"); the steps of a fused chain (`flow.graph.fusion`) are
drawn inside one box (a Mermaid subgraph, a DOT cluster) labelled with the chain's worker bounds. ``show_config`` prints every option of every step (the
values in effect, with type, default and help as comments) and the router options; its output is
itself a valid pipeline file. Call them on a validated graph.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from typing import Any

import yaml

from flow.graph.fusion import chain_workers, link_break, plan
from flow.graph.model import ROUTER_TYPES, Graph, RouterOptions, StepSpec, resolve_use, use_label
from flow.graph.params import REQUIRED, describe_params
from flow.graph.step import Step

_MERMAID_SHAPES = {"producer": ('(["', '"])'), "stager": ('["', '"]'), "consumer": ('[("', '")]')}
_DOT_SHAPES = {
    "producer": "shape=invhouse",
    "stager": "shape=box, style=rounded",
    "consumer": "shape=cylinder",
}


def node_label(spec: StepSpec) -> str:
    """``name`` for producers and consumers; ``name ×N`` or ``name ×MIN–MAX`` for stagers."""
    if spec.kind != "stager":
        return spec.name
    w = spec.workers
    return f"{spec.name} ×{w.min}" if w.min == w.max else f"{spec.name} ×{w.min}–{w.max}"


def _node_id(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def chain_label(graph: Graph, chain) -> str:
    """``fused ×MIN–MAX`` (or ``fused ×N``): a fused chain's box."""
    w = chain_workers(graph, chain)
    return f"fused ×{w.min}" if w.min == w.max else f"fused ×{w.min}–{w.max}"


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart LR``: stadium producers, boxed stagers, cylinder consumers; each fused
    chain a ``subgraph``."""
    lines = [f"%% pipeline: {graph.name}", "flowchart LR"]
    chains = {c.head: c for c in plan(graph)}
    fused = {name for c in chains.values() for name in c.steps}

    def node(spec: StepSpec, indent: str) -> str:
        left, right = _MERMAID_SHAPES.get(spec.kind, _MERMAID_SHAPES["stager"])
        label = node_label(spec).replace('"', "#quot;")
        return f"{indent}{_node_id(spec.name)}{left}{label}{right}"

    for spec in graph.steps:
        if spec.name in chains:
            c = chains[spec.name]
            lines.append(f'    subgraph fused_{_node_id(c.head)}["{chain_label(graph, c)}"]')
            lines += [node(graph[name], "        ") for name in c.steps]
            lines.append("    end")
        elif spec.name not in fused:
            lines.append(node(spec, "    "))
    for spec in graph.steps:
        lines += [f"    {_node_id(spec.name)} --> {_node_id(t)}" for t in spec.to]
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph (left to right): producers as houses, stagers as boxes, consumers as cylinders."""
    lines = [
        f"digraph {_dot_quote(graph.name)} {{",
        "    rankdir=LR;",
        '    node [fontname="Helvetica"];',
    ]
    for spec in graph.steps:
        shape = _DOT_SHAPES.get(spec.kind, _DOT_SHAPES["stager"])
        lines.append(
            f"    {_dot_quote(spec.name)} [{shape}, label={_dot_quote(node_label(spec))}];"
        )
    for c in plan(graph):
        lines.append(f"    subgraph {_dot_quote('cluster_' + c.head)} {{")
        lines.append(f"        label={_dot_quote(chain_label(graph, c))}; style=dashed;")
        lines.append("        " + " ".join(f"{_dot_quote(n)};" for n in c.steps))
        lines.append("    }")
    for spec in graph.steps:
        lines += [f"    {_dot_quote(spec.name)} -> {_dot_quote(t)};" for t in spec.to]
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# show-config


def yaml_value(value: Any) -> str:
    """One value as inline YAML (flow style); objects YAML cannot write become quoted strings."""
    if isinstance(value, str) and value and _plain_ok(value):
        return value
    try:
        text = yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()
        return text[1:-1]
    except yaml.YAMLError:
        return json.dumps(str(value))


def _plain_ok(text: str) -> bool:
    try:
        return "\n" not in text and yaml.safe_load(f"k: {text}") == {"k": text}
    except yaml.YAMLError:
        return False


def _aligned(rows: list[tuple[str, str]], indent: str) -> list[str]:
    """``key: value  # comment`` lines with the comments in one column."""
    width = max((len(text) for text, _ in rows), default=0)
    return [
        f"{indent}{text:<{width}}  # {comment}".rstrip() if comment else f"{indent}{text}"
        for text, comment in rows
    ]


def _param_rows(spec: StepSpec) -> list[tuple[str, str]]:
    try:
        obj = resolve_use(spec.use)
    except Exception:
        obj = None
    if isinstance(obj, type) and issubclass(obj, Step):
        return [
            (
                f"{r['name']}: {yaml_value(r['value'])}",
                f"{r['type']}, {_default(r['default'])}" + (f": {r['help']}" if r["help"] else ""),
            )
            for r in describe_params(obj, spec.param_dict)
        ]
    given = spec.param_dict
    rows = []
    if obj is not None and callable(obj):
        try:
            params = list(inspect.signature(obj).parameters.values())[1:]
        except (TypeError, ValueError):
            params = []
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                default = "required" if p.default is p.empty else f"default {yaml_value(p.default)}"
                tname = (
                    getattr(p.annotation, "__name__", p.annotation)
                    if p.annotation is not p.empty
                    else ""
                )
                value = given.pop(p.name, None if p.default is p.empty else p.default)
                rows.append((f"{p.name}: {yaml_value(value)}", f"{tname}, {default}".lstrip(", ")))
    rows += [(f"{k}: {yaml_value(v)}", "") for k, v in given.items()]
    return rows


def _default(default: Any) -> str:
    return "required" if default is REQUIRED else f"default {yaml_value(default)}"


def _summary(spec: StepSpec) -> str:
    try:
        doc = inspect.getdoc(resolve_use(spec.use)) or ""
    except Exception:
        doc = ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return f"{spec.kind} {use_label(spec.use)}" + (f": {first}" if first else "")


def _step_lines(spec: StepSpec) -> list[str]:
    w = spec.workers
    workers = str(w.min) if w.min == w.max else f"{{min: {w.min}, max: {w.max}}}"
    out = [f"  # {_summary(spec)}", f"  - name: {spec.name}"]
    out += _aligned(
        [
            (f"kind: {spec.kind}", ""),
            (f"use: {yaml_value(use_label(spec.use))}", ""),
            (f"workers: {workers}", "scaled by the router" if w.min != w.max else ""),
            (f"pinned: {yaml_value(spec.pinned)}", ""),
            (f"fuse: {yaml_value(spec.fuse)}", "may share a worker with its neighbours"),
        ],
        "    ",
    )
    rows = _param_rows(spec)
    if rows:
        out.append("    with:")
        out += _aligned(rows, "      ")
    if spec.to:
        out.append(f"    to: {yaml_value(list(spec.to))}")
    return out


def _fusion_lines(graph: Graph) -> list[str]:
    """Comments saying which steps run fused in one worker, and why each other stager does not."""
    chains = plan(graph)
    out = [f"# fused: {c.label} (one worker process, {chain_label(graph, c)})" for c in chains]
    for spec in graph.steps:
        if spec.kind == "stager" and not any(spec.name in c.steps[:-1] for c in chains):
            why = link_break(graph, spec)
            if why and spec.to:
                out.append(f"# not fused after '{spec.name}': {why}")
    return out or ["# fused: none"]


def show_config(graph: Graph) -> str:
    """Every step's effective options and the router options, as commented YAML (a valid pipeline)."""
    source = f" (from {graph.file})" if graph.file else ""
    out = [
        f"# Effective configuration of pipeline '{graph.name}'{source}",
        f"name: {yaml_value(graph.name)}",
    ]
    if graph.description:
        out.append(f"description: {yaml_value(graph.description)}")
    out += _fusion_lines(graph)
    out.append("steps:")
    for spec in graph.steps:
        out += _step_lines(spec)
    out.append("router:")
    defaults = RouterOptions()
    rows = [
        (
            f"{f.name}: {yaml_value(getattr(graph.router, f.name))}",
            f"{ROUTER_TYPES[f.name].__name__}, default {yaml_value(getattr(defaults, f.name))}: "
            f"{f.metadata.get('help', '')}".rstrip(": "),
        )
        for f in fields(RouterOptions)
    ]
    out += _aligned(rows, "  ")
    return "\n".join(out) + "\n"
