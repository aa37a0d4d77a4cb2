"""Command-line overrides of a loaded pipeline: ``--set STEP.PARAM=VALUE`` (the value is read as a YAML
scalar) and ``--workers STEP=N`` or ``STEP=MIN:MAX``. Each malformed or unknown override is a
`ConfigError` naming the option; `flow.graph.loader` applies them before validation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import yaml

from flow.errors import ConfigError, ConfigErrors
from flow.graph.model import Graph, StepSpec, Workers, did_you_mean, resolve_use
from flow.graph.params import declared_params
from flow.graph.step import Step
from flow.graph.yaml_lines import LineLoader, plain


def parse_overrides(items: Mapping[str, Any] | Iterable) -> list[tuple[str, str, Any, str]]:
    """``(step, param, value, text)`` for each override; raises `ConfigErrors` on malformed ones."""
    pairs = _pairs(items, "--set", "STEP.PARAM=VALUE")
    out, errors = [], []
    for key, value, text in pairs:
        step_name, dot, param = key.partition(".")
        if not dot or not step_name or not param:
            errors.append(
                ConfigError(
                    f"--set {text}: expected STEP.PARAM=VALUE", hint="e.g. --set clean.picture=8"
                )
            )
            continue
        if isinstance(value, str):
            try:
                value = plain(yaml.load(value, Loader=LineLoader)) if value.strip() else value
            except yaml.YAMLError:
                pass
        out.append((step_name, param, value, text))
    if errors:
        raise ConfigErrors(errors)
    return out


def parse_workers(items: Mapping[str, Any] | Iterable) -> list[tuple[str, Workers, str]]:
    """``(step, Workers, text)`` for each ``STEP=N`` / ``STEP=MIN:MAX``; raises `ConfigErrors`."""
    out, errors = [], []
    for name, value, text in _pairs(items, "--workers", "STEP=N"):
        try:
            if isinstance(value, Workers):
                bounds = (value.min, value.max)
            elif isinstance(value, (tuple, list)):
                bounds = tuple(int(v) for v in value)
            else:
                low, _, high = str(value).partition(":")
                bounds = (int(low), int(high or low))
            if len(bounds) != 2:
                raise ValueError
        except (TypeError, ValueError):
            errors.append(
                ConfigError(
                    f"--workers {text}: expected STEP=N or STEP=MIN:MAX",
                    hint="e.g. --workers calibrate=1:8",
                )
            )
            continue
        out.append((name, Workers(*bounds), text))
    if errors:
        raise ConfigErrors(errors)
    return out


def _pairs(
    items: Mapping[str, Any] | Iterable, option: str, form: str
) -> list[tuple[str, Any, str]]:
    if isinstance(items, Mapping):
        return [(str(k), v, f"{k}={v}") for k, v in items.items()]
    out = []
    for item in items:
        if isinstance(item, str):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigErrors([ConfigError(f"{option} {item}: expected {form}")])
            out.append((key.strip(), value, item))
        else:
            key, value = item
            out.append((str(key), value, f"{key}={value}"))
    return out


def _unknown_step(graph: Graph, name: str, text: str, option: str) -> ConfigError:
    hint = did_you_mean(name, graph.names) or f"steps: {', '.join(graph.names)}"
    return ConfigError(f"{option} {text}: no step named '{name}'", hint=hint)


def apply_overrides(graph: Graph, items: Any, errors: list[ConfigError]) -> Graph:
    try:
        overrides = parse_overrides(items)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
        return graph
    steps = list(graph.steps)
    index = _first_index(graph)
    for name, param, value, text in overrides:
        if name not in index:
            errors.append(_unknown_step(graph, name, text, "--set"))
            continue
        spec = steps[index[name]]
        problem = _override_problem(spec, param, value, text)
        if problem:
            errors.append(problem)
            continue
        params = dict(spec.params)
        params[param] = value
        steps[index[name]] = replace(spec, params=tuple(params.items()))
    return replace(graph, steps=tuple(steps))


def _first_index(graph: Graph) -> dict[str, int]:
    """Position of the first step of each name (duplicates are reported by validation)."""
    index: dict[str, int] = {}
    for i, s in enumerate(graph.steps):
        index.setdefault(s.name, i)
    return index


def _override_problem(spec: StepSpec, param: str, value: Any, text: str) -> ConfigError | None:
    """Check one --set against the step's declared params (when its class can be imported)."""
    try:
        obj = resolve_use(spec.use)
    except ConfigError:
        return None  # the import error is reported by validation
    if not (isinstance(obj, type) and issubclass(obj, Step)):
        return None  # a function's keywords are checked by validation
    declared = declared_params(obj)
    if param not in declared:
        valid = f"valid: {', '.join(declared)}" if declared else "it takes no parameters"
        hint = " ".join(h for h in (did_you_mean(param, declared), valid) if h)
        return ConfigError(
            f"--set {text}: step '{spec.name}' has no parameter '{param}'", hint=hint
        )
    try:
        declared[param].convert(value)
    except ValueError as exc:
        return ConfigError(f"--set {text}: parameter '{param}' of step '{spec.name}': {exc}")
    return None


def apply_workers(graph: Graph, items: Any, errors: list[ConfigError]) -> Graph:
    try:
        requested = parse_workers(items)
    except ConfigErrors as exc:
        errors.extend(exc.errors)
        return graph
    steps = list(graph.steps)
    index = _first_index(graph)
    for name, bounds, text in requested:
        if name not in index:
            errors.append(_unknown_step(graph, name, text, "--workers"))
            continue
        steps[index[name]] = replace(steps[index[name]], workers=bounds)
    return replace(graph, steps=tuple(steps))
