"""Run a graph in one process with the same step code (``flow run --inline``): pdb works.

Same semantics as the router: keys, one-to-many, explicit routing, fan-out, retries and dead letters,
consumers de-duplicating by (key, path). No sockets, no processes; events go depth-first so memory
stays bounded.
"""

from __future__ import annotations

import collections
import time
import traceback

from flow.engine.deadletter import DeadLetterFile
from flow.engine.outputs import ALL, path_after, producer_outputs, stager_outputs
from flow.graph.model import Graph, resolve_use
from flow.graph.step import instantiate
from flow.observe.summary import RunSummary
from flow.wire import codec


def build_steps(graph: Graph, context: dict) -> dict:
    """Instantiate every step of the graph with its parameters and the context."""
    steps = {}
    for spec in graph.steps:
        steps[spec.name] = instantiate(resolve_use(spec.use), spec.kind, spec.name, spec.param_dict, context)
    return steps


def run_inline(graph: Graph, context: dict | None = None, dead_letter: DeadLetterFile | None = None,
               stop=lambda: False) -> RunSummary:
    """Run ``graph`` to completion in this process and return its summary."""
    t0 = time.monotonic()
    context = context if context is not None else {}
    dl = dead_letter or DeadLetterFile(graph.router.dead_letter, graph.file)
    steps = build_steps(graph, context)
    index = {s.name: i for i, s in enumerate(graph.steps)}
    summary = RunSummary(consumed={c.name: 0 for c in graph.consumers},
                         unique_consumed={c.name: 0 for c in graph.consumers},
                         workers_started=len(graph.steps))
    seen = {c.name: set() for c in graph.consumers}
    for spec in graph.steps:
        if spec.kind != "producer":
            steps[spec.name].setup()
    for spec in graph.consumers if context.get("flow.resume") else ():
        seen[spec.name].update(("*", str(k)) for k in steps[spec.name].done_keys())
    queue: collections.deque = collections.deque()

    def emit(src: str, key: str, path: str, target: str, event) -> None:
        for t in (graph[src].to if target == ALL else (target,)):
            queue.append((t, key, path, event, 0))

    def run_queue() -> None:
        while queue:
            name, key, path, event, attempts = queue.popleft()
            spec, step = graph[name], steps[name]
            try:
                if spec.kind == "consumer":
                    summary.consumed[name] += 1
                    if (key, path) in seen[name] or ("*", key) in seen[name]:
                        continue
                    step.key = key
                    step.process(event)
                    seen[name].add((key, path))
                    summary.unique_consumed[name] += 1
                else:
                    outs = stager_outputs(step.process(event), key, name, spec.to)
                    for k, target, ev in outs:
                        emit(name, k, path_after(path, index[name]), target, ev)
            except Exception as exc:
                attempts += 1
                summary.errors += 1
                if attempts < graph.router.max_retries:
                    summary.retries += 1
                    queue.appendleft((name, key, path, event, attempts))
                else:
                    dl.write(key, path, name, f"{type(exc).__name__}: {exc}",
                             traceback.format_exc(), attempts, codec.encode(event))
                    summary.dead_letter += 1

    producers = []
    for spec in graph.producers:
        step = steps[spec.name]
        step.setup()
        shard = context.get("flow.shard")
        outputs = producer_outputs(step.process(), spec.name, spec.to,
                                   shard=tuple(shard) if shard else None)
        producers.append((spec, step, iter(outputs)))
    try:
        while producers and not stop():
            for entry in list(producers):
                spec, step, it = entry
                try:
                    key, target, event = next(it)
                except StopIteration:
                    producers.remove(entry)
                    step.teardown()
                    continue
                summary.produced += 1
                emit(spec.name, key, str(index[spec.name]), target, event)
                run_queue()
    finally:
        for _spec, step, _ in producers:
            step.teardown()
        for spec in graph.steps:
            if spec.kind != "producer":
                steps[spec.name].teardown()
        dl.close()
    summary.wall_s = time.monotonic() - t0
    summary.dead_letter_file = str(dl.path) if summary.dead_letter else None
    summary.state = "aborted" if stop() else "finished"
    summary.decide_exit_code()
    return summary
