"""Validation of a pipeline graph: every problem found before any process starts.

`check` returns all the problems of a `Graph` as `ConfigError`/`GraphError` with file, line and a hint
(unknown keys or targets, cycles, unreachable steps, consumers with outgoing edges, classes that
cannot be imported, parameters that do not match the step's declared ones); `validate` raises them
together as `ConfigErrors`. `flow.graph.model` re-exports both.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from flow.errors import ConfigError, ConfigErrors
from flow.graph.model import (
    _ROUTER_MIN,
    KINDS,
    NAME_RE,
    Graph,
    StepSpec,
    Workers,
    did_you_mean,
    resolve_use,
    use_label,
)
from flow.graph.params import declared_params, resolve_params
from flow.graph.step import Step
from flow.graph.topology import check_shape
from flow.graph.topology import step_error as _err


def validate(graph: Graph) -> Graph:
    """Return ``graph`` if it is valid; else raise `ConfigErrors` with every problem found."""
    errors = check(graph)
    if errors:
        raise ConfigErrors(errors)
    return graph


def check(graph: Graph, partial: bool = False) -> list[ConfigError]:
    """Every problem of ``graph`` as a list of `ConfigError` / `GraphError`, sorted by file and line.

    ``partial``: the graph was built from a description with errors already reported (some steps or
    edges may be missing), so the checks that would only repeat them (no steps, unreachable) are
    skipped.
    """
    errors: list[ConfigError] = _check_router(graph)
    seen: dict[str, StepSpec] = {}
    doubtful: set[str] = set()  # steps whose effective kind is unknown
    for spec in graph.steps:
        step_errors, obj = _check_step(spec, seen)
        if spec.kind not in KINDS or _class_kind(obj) not in (None, spec.kind):
            doubtful.add(spec.name)
        errors += step_errors
        seen.setdefault(spec.name, spec)
    errors += check_shape(graph, doubtful, partial)
    return sort_errors(errors)


def sort_errors(errors: list[ConfigError]) -> list[ConfigError]:
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0))


def _check_router(graph: Graph) -> list[ConfigError]:
    errors = []
    for name, low in _ROUTER_MIN.items():
        value = getattr(graph.router, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < low:
            errors.append(
                ConfigError(
                    f"router option '{name}' must be a number >= {low}, got {value!r}",
                    graph.file,
                    graph.line_of(f"router.{name}") or graph.line_of("router"),
                )
            )
    if graph.router.start_method not in ("zygote", "spawn"):
        errors.append(
            ConfigError(
                f"router option 'start_method' must be zygote or spawn, "
                f"got {graph.router.start_method!r}",
                graph.file,
                graph.line_of("router.start_method") or graph.line_of("router"),
                "zygote: workers fork from a warm template; spawn: each is a fresh interpreter",
            )
        )
    if not isinstance(graph.router.fuse, bool):
        errors.append(
            ConfigError(
                f"router option 'fuse' must be true or false, got {graph.router.fuse!r}",
                graph.file,
                graph.line_of("router.fuse") or graph.line_of("router"),
            )
        )
    return errors


def _class_kind(obj: Any) -> str | None:
    """The kind a Step class declares; None for anything else."""
    if inspect.isclass(obj) and issubclass(obj, Step):
        return obj.kind or None
    return None


def _check_step(spec: StepSpec, seen: Mapping[str, StepSpec]) -> tuple[list[ConfigError], Any]:
    """The step's own problems, and the object its ``use`` names (None if it cannot be resolved)."""
    errors = []
    if not isinstance(spec.name, str) or not NAME_RE.match(spec.name):
        errors.append(
            _err(
                spec,
                "name",
                f"invalid step name {spec.name!r}",
                "use letters, digits, '_' and '-', starting with a letter",
            )
        )
    elif spec.name in seen:
        first = seen[spec.name]
        errors.append(
            _err(
                spec,
                "name",
                "duplicate step name",
                f"first defined on line {first.line_of('name')}; step names must be unique"
                if first.file == spec.file
                else "step names must be unique",
            )
        )
    try:
        obj = resolve_use(spec.use)
    except ConfigError as exc:
        obj = None
        errors.append(_err(spec, "use", exc.message, exc.hint))
    if spec.kind in ("", None):
        if obj is not None:
            errors.append(
                _err(
                    spec,
                    "kind",
                    "no 'kind' given and none can be inferred from 'use'",
                    f"add 'kind: stager' (one of: {', '.join(KINDS)})",
                )
            )
    elif spec.kind not in KINDS:
        errors.append(
            _err(
                spec,
                "kind",
                f"unknown kind {spec.kind!r}",
                did_you_mean(spec.kind, KINDS) or f"one of: {', '.join(KINDS)}",
            )
        )
    errors += _check_workers(spec)
    if not isinstance(spec.pinned, bool):
        errors.append(_err(spec, "pinned", f"'pinned' must be true or false, got {spec.pinned!r}"))
    if not isinstance(spec.fuse, bool):
        errors.append(_err(spec, "fuse", f"'fuse' must be true or false, got {spec.fuse!r}"))
    return (errors if obj is None else errors + _check_use(spec, obj)), obj


def _check_workers(spec: StepSpec) -> list[ConfigError]:
    w = spec.workers
    key = "workers"
    if not isinstance(w, Workers) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (w.min, w.max)
    ):
        return [_err(spec, key, f"'workers' must be N or {{min: N, max: M}}, got {w!r}")]
    if w.min < 1:
        return [_err(spec, key, f"workers min must be at least 1, got {w.min}")]
    if w.min > w.max:
        return [
            _err(
                spec,
                key,
                f"workers min ({w.min}) is greater than max ({w.max})",
                f"use {{min: {w.max}, max: {w.min}}}",
            )
        ]
    if spec.kind in ("producer", "consumer") and (w.min, w.max) != (1, 1):
        return [
            _err(
                spec,
                key,
                f"a {spec.kind} runs as one process; workers must be 1, got "
                f"{w.min if w.min == w.max else f'{w.min}-{w.max}'}",
                "only stagers are scaled; remove 'workers'",
            )
        ]
    return []


def _check_use(spec: StepSpec, obj: Any) -> list[ConfigError]:
    label = use_label(spec.use)
    if inspect.isclass(obj) and issubclass(obj, Step):
        if obj.kind and spec.kind in KINDS and obj.kind != spec.kind:
            return [
                _err(
                    spec,
                    "kind",
                    f"kind is '{spec.kind}' but {label} is a {obj.kind}",
                    f"write 'kind: {obj.kind}' or leave 'kind' out",
                )
            ]
        return _check_class_params(spec, obj, label)
    if not callable(obj):
        return [
            _err(
                spec,
                "use",
                f"{label} ({type(obj).__name__}) is not a step class or function",
                "point 'use' at a Producer/Stager/Consumer subclass or a function",
            )
        ]
    if spec.kind == "producer":
        return [
            _err(
                spec,
                "kind",
                f"{label} is a plain function; a producer must be a Producer class",
                "subclass flow.graph.step.Producer and yield events from process()",
            )
        ]
    return _check_function_params(spec, obj, label)


def _check_class_params(spec: StepSpec, cls: type, label: str) -> list[ConfigError]:
    declared = declared_params(cls)
    valid = f"valid: {', '.join(declared)}" if declared else f"{label} takes no parameters"
    errors = _unknown_params(spec, declared, label, valid)
    for name, value in spec.params:
        if name not in declared:
            continue
        try:
            declared[name].convert(value)
        except ValueError as exc:
            errors.append(
                _err(
                    spec, f"with.{name}", f"parameter '{name}': {exc}", _param_hint(declared[name])
                )
            )
    given = spec.param_dict
    for name, param in declared.items():
        if param.required and name not in given:
            errors.append(
                _err(
                    spec,
                    "with" if "with" in dict(spec.lines) else "use",
                    f"missing required parameter '{name}' of {label}",
                    f"add 'with: {{{name}: ...}}'" + (f": {param.help}" if param.help else ""),
                )
            )
    if not errors:  # resolve_params is the authority; translate anything it still rejects
        try:
            resolve_params(cls, given)
        except KeyError as exc:
            errors.append(_err(spec, "with", f"unknown parameter {exc} for {label}", valid))
        except ValueError as exc:
            errors.append(_err(spec, "with", str(exc)))
    return errors


def _unknown_params(spec: StepSpec, known, label: str, valid: str) -> list[ConfigError]:
    """An error (with a did-you-mean hint) for each parameter of ``spec`` not in ``known``."""
    errors = []
    for name, _ in spec.params:
        if name not in known:
            hint = " ".join(h for h in (did_you_mean(name, known), valid) if h)
            errors.append(
                _err(spec, f"with.{name}", f"unknown parameter '{name}' for {label}", hint)
            )
    return errors


def _param_hint(param: Any) -> str:
    tname = getattr(param.type, "__name__", str(param.type))
    return f"{param.name} is {tname}" + (f": {param.help}" if param.help else "")


def _check_function_params(spec: StepSpec, func: Any, label: str) -> list[ConfigError]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    params = list(sig.parameters.values())[1:]  # the first one receives the event
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    valid = f"valid: {', '.join(names)}" if names else f"{label} takes no parameters"
    errors = _unknown_params(spec, names, label, valid)
    given = spec.param_dict
    for p in params:
        if p.name in names and p.default is p.empty and p.name not in given:
            errors.append(
                _err(
                    spec,
                    "with" if "with" in dict(spec.lines) else "use",
                    f"missing required parameter '{p.name}' of {label}",
                    f"add 'with: {{{p.name}: ...}}'",
                )
            )
    return errors
