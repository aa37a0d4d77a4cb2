"""The shape of a pipeline graph: edges to known steps of the right kind, no cycles, every step reachable
from a producer, consumers without outgoing edges. `check_shape` returns each problem as a
`GraphError` with the file and line of the key at fault; `flow.graph.validation` calls it after the
per-step checks.
"""

from __future__ import annotations

from flow.errors import ConfigError, GraphError
from flow.graph.model import KINDS, Graph, StepSpec, did_you_mean


def step_error(
    spec: StepSpec,
    key: str,
    message: str,
    hint: str | None = None,
    cls: type[ConfigError] = ConfigError,
) -> ConfigError:
    """A `ConfigError` (or ``cls``) about ``spec``, at the line of its ``key``."""
    return cls(f"step '{spec.name}': {message}", spec.file, spec.line_of(key), hint)


def check_shape(graph: Graph, doubtful: set[str], partial: bool) -> list[ConfigError]:
    where = (graph.file, graph.line_of("steps"))
    if not graph.steps:
        return (
            []
            if partial
            else [GraphError("the pipeline has no steps", *where, "add steps under 'steps:'")]
        )
    errors = _check_edges(graph, doubtful)
    kinds = {s.kind for s in graph.steps if s.name not in doubtful}
    unsure = bool(doubtful) or not kinds <= set(KINDS)
    if "producer" not in kinds and not unsure:
        errors.append(
            GraphError(
                "the pipeline has no producer",
                *where,
                "add a step of kind 'producer' that yields events",
            )
        )
    if "consumer" not in kinds and not unsure:
        errors.append(
            GraphError(
                "the pipeline has no consumer",
                *where,
                "add a step of kind 'consumer' that keeps the events",
            )
        )
    errors += _check_cycles(graph)
    names = set(graph.names)
    if not partial and all(t in names for s in graph.steps for t in s.to):
        errors += _check_reachable(graph, doubtful)
    return errors


def _check_edges(graph: Graph, doubtful: set[str]) -> list[ConfigError]:
    names = set(graph.names)
    by_name = {s.name: s for s in graph.steps}
    errors = []
    for spec in graph.steps:
        if spec.kind == "consumer" and spec.to and spec.name not in doubtful:
            errors.append(
                step_error(
                    spec,
                    "to",
                    "a consumer cannot send events on ('to' given)",
                    "remove 'to', or make it a stager",
                    GraphError,
                )
            )
            continue
        for target in dict.fromkeys(spec.to):
            if target not in names:
                hint = (
                    did_you_mean(target, names - {spec.name}) or f"steps: {', '.join(graph.names)}"
                )
                errors.append(
                    step_error(spec, "to", f"unknown target '{target}' in 'to'", hint, GraphError)
                )
            elif by_name[target].kind == "producer" and target not in doubtful:
                errors.append(
                    step_error(
                        spec,
                        "to",
                        f"sends to producer '{target}', but producers take no inputs",
                        f"remove '{target}' from 'to', or make '{target}' a stager",
                        GraphError,
                    )
                )
        if len(set(spec.to)) != len(spec.to):
            errors.append(step_error(spec, "to", "a target is listed twice in 'to'", None, GraphError))
    return errors


def _check_cycles(graph: Graph) -> list[ConfigError]:
    """Report each cycle once, as ``a -> b -> a`` starting at its first-declared step."""
    order = {n: i for i, n in enumerate(graph.names)}
    producers = {s.name for s in graph.producers}  # edges into producers are reported apart
    succ = {s.name: [t for t in s.to if t in order and t not in producers] for s in graph.steps}
    found: dict[frozenset, list[str]] = {}
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in succ[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :]
                first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                found.setdefault(frozenset(cycle), cycle[first:] + cycle[:first])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for name in graph.names:
        if name not in state:
            visit(name, [])
    errors = []
    for cycle in found.values():
        spec = graph[cycle[0]]
        errors.append(
            step_error(
                spec,
                "to",
                f"cycle: {' -> '.join(cycle + [cycle[0]])}",
                "a pipeline must be acyclic; remove one of these edges",
                GraphError,
            )
        )
    return errors


def _check_reachable(graph: Graph, doubtful: set[str]) -> list[ConfigError]:
    starts = [
        s.name
        for s in graph.steps
        if s.kind == "producer" or s.kind not in KINDS or s.name in doubtful
    ]
    succ = {s.name: s.to for s in graph.steps}
    reached, todo = set(starts), list(starts)
    while todo:
        for nxt in succ.get(todo.pop(), ()):
            if nxt in succ and nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    if not graph.producers:
        return []  # already reported: no producer
    return [
        step_error(
            s,
            "name",
            "not reachable from any producer",
            f"add '{s.name}' to the 'to' of an upstream step, or remove it",
            GraphError,
        )
        for s in graph.steps
        if s.name not in reached
    ]
