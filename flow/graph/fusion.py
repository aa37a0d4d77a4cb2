"""Which steps run fused: consecutive stagers on a linear path share one worker process.

A link ``a -> b`` fuses when both are stagers that allow it (``fuse: true``, the default), ``a``
has exactly one successor (``to: [b]``) and ``b`` exactly one input (``a``), and the graph allows
fusion (``router: {fuse: true}``, the default). Maximal runs of such links are *chains*. Fan-out,
fan-in, a producer or consumer, and ``fuse: false`` end a chain. A step inside a chain (not its
last) has the next step as its only target, so explicit routing (`flow.graph.step.To`) there can
only name that step (any other target is refused as when unfused); the last step's outputs, routed
or not, go to the router. Pure functions of a `Graph`: no processes, no sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from flow.graph.model import Graph, StepSpec, Workers


@dataclass(frozen=True)
class Chain:
    """Steps fused into one unit of work, in order; the unit is named after its first step."""

    steps: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.steps[0]

    @property
    def tail(self) -> str:
        return self.steps[-1]

    @property
    def label(self) -> str:
        return " → ".join(self.steps)


def link_break(graph: Graph, a: StepSpec) -> str | None:
    """Why ``a`` does not fuse with its successor (None: it does)."""
    if not graph.router.fuse:
        return "fusion is off for the graph (router: {fuse: false})"
    if a.kind != "stager":
        return f"'{a.name}' is a {a.kind}"
    if not a.fuse:
        return f"'{a.name}' has fuse: false"
    if len(a.to) != 1:
        return f"'{a.name}' fans out to {len(a.to)} steps" if a.to else f"'{a.name}' has no successor"
    nxt = next((s for s in graph.steps if s.name == a.to[0]), None)
    if nxt is None or nxt.kind != "stager":
        return f"'{a.to[0]}' is not a stager"
    if not nxt.fuse:
        return f"'{nxt.name}' has fuse: false"
    if len(graph.inputs(nxt.name)) != 1:
        return f"'{nxt.name}' has {len(graph.inputs(nxt.name))} inputs"
    return None


def plan(graph: Graph) -> tuple[Chain, ...]:
    """Every maximal chain of two or more fused stagers, in the order of their first steps."""
    specs = {s.name: s for s in graph.steps}
    nxt = {s.name: s.to[0] for s in graph.steps if link_break(graph, s) is None}
    linked_to = set(nxt.values())
    chains = []
    for s in graph.steps:
        if s.name in linked_to or s.name not in nxt:
            continue   # not the start of a chain
        names = [s.name]
        while names[-1] in nxt and nxt[names[-1]] not in names and nxt[names[-1]] in specs:
            names.append(nxt[names[-1]])
        chains.append(Chain(tuple(names)))
    return tuple(chains)


def groups(graph: Graph) -> dict[str, str]:
    """Step name -> the name of its chain's first step, for every fused step."""
    return {name: c.head for c in plan(graph) for name in c.steps}


def chain_workers(graph: Graph, chain: Chain) -> Workers:
    """Worker bounds of a chain: it scales as far as its most scalable step allows, and starts with
    as many workers as its most demanding step asks for."""
    ws = [graph[name].workers for name in chain.steps]
    low = max(w.min for w in ws)
    return Workers(low, max(low, max(w.max for w in ws)))


def chain_pinned(graph: Graph, chain: Chain) -> bool:
    """A chain stays on the router host when any of its steps is pinned."""
    return any(graph[name].pinned for name in chain.steps)


__all__ = ["Chain", "chain_pinned", "chain_workers", "groups", "link_break", "plan"]
