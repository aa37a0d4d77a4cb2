"""Pipeline YAML -> `flow.graph.Graph`, with FILE:LINE on every error.

The YAML is read with a SafeLoader that records the line of every mapping key, so that each
`ConfigError` names the line of the key at fault. Loading collects *all* problems (YAML schema here,
then the graph's own checks in `flow.graph.check`) and raises one `ConfigErrors`. Command-line
overrides (``--set STEP.PARAM=VALUE``, ``--workers STEP=N`` or ``STEP=MIN:MAX``) are applied before
validation. ``use:`` accepts "module:Name" or a short name registered in `REGISTRY`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import yaml

from .errors import ConfigError, ConfigErrors
from .graph import (
    REGISTRY,
    ROUTER_TYPES,
    Graph,
    RouterOptions,
    StepSpec,
    Workers,
    check,
    did_you_mean,
    infer_kind,
    resolve_use,
    sort_errors,
)
from .params import declared_params
from .step import Step

__all__ = ["REGISTRY", "load_graph", "graph_from_text", "parse_overrides", "parse_workers"]

TOP_KEYS = ("name", "description", "steps", "router")
STEP_KEYS = ("name", "kind", "use", "with", "to", "workers", "pinned")
WORKER_KEYS = ("min", "max")


class _Map(dict):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int = 1
    key_lines: dict
    duplicates: list


class _Seq(list):
    """A YAML sequence that remembers its own line and the line of each item."""

    line: int = 1
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry source lines (1-based)."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    own = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # merged (<<: *anchor) pairs come first; own keys override them
    merged = len(node.value) - own
    out = _Map()
    out.line, out.key_lines, out.duplicates = node.start_mark.line + 1, {}, []
    own_keys: set = set()
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark
            )
        line = key_node.start_mark.line + 1
        if index >= merged:
            if key in own_keys:
                out.duplicates.append((key, line, out.key_lines[key]))
            own_keys.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _type_name(value: Any) -> str:
    return {
        dict: "mapping",
        _Map: "mapping",
        list: "list",
        _Seq: "list",
        str: "string",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Public entry points


def load_graph(
    path: str | os.PathLike,
    overrides: Mapping[str, Any] | Iterable = (),
    workers: Mapping[str, Any] | Iterable = (),
) -> Graph:
    """Read, override and validate a pipeline file; raise `ConfigErrors` listing every problem.

    ``overrides`` maps ``"STEP.PARAM"`` to a value (a string is parsed as a YAML scalar), or is a
    list of ``"STEP.PARAM=VALUE"`` strings; ``workers`` maps ``"STEP"`` to N, ``"N"``, ``"MIN:MAX"``
    or (min, max), or is a list of ``"STEP=N"`` / ``"STEP=MIN:MAX"`` strings.
    """
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigErrors(
            [ConfigError(f"cannot read the file: {exc.strerror or exc}", filename)]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigErrors(
            [ConfigError(f"not a UTF-8 text file ({exc.reason})", filename)]
        ) from None
    return graph_from_text(text, filename, overrides, workers)


def graph_from_text(
    text: str,
    filename: str = "<string>",
    overrides: Mapping[str, Any] | Iterable = (),
    workers: Mapping[str, Any] | Iterable = (),
) -> Graph:
    """Like `load_graph`, from the YAML text itself (``filename`` is used in messages)."""
    data = _parse_yaml(text, filename)
    builder = _Builder(filename)
    graph = builder.graph(data)
    graph = _apply_overrides(graph, overrides, builder.errors)
    graph = _apply_workers(graph, workers, builder.errors)
    errors = sort_errors(builder.errors + check(graph, partial=bool(builder.errors)))
    if errors:
        raise ConfigErrors(errors)
    return graph


def _parse_yaml(text: str, filename: str) -> Any:
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise ConfigErrors(
            [
                ConfigError(
                    "the file is empty", filename, 1, "a pipeline needs at least 'name' and 'steps'"
                )
            ]
        )
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ConfigErrors([_yaml_error(exc, filename)]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(f"invalid YAML: {exc}", filename)]) from None


def _yaml_error(exc: yaml.MarkedYAMLError, filename: str) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "cannot parse"
    context = exc.context or ""
    if context.startswith("while parsing a flow") and exc.context_mark and exc.problem_mark:
        what = context.removeprefix("while parsing a ")  # "flow sequence" / "flow mapping"
        close = "]" if "sequence" in what else "}"
        return ConfigError(
            f"invalid YAML: unclosed {what}: {problem} on line {mark.line + 1}",
            filename,
            exc.context_mark.line + 1,
            f"close it with '{close}'",
        )
    hint = None
    if "\t" in problem or "'\\t'" in problem:
        hint = "indent with spaces; YAML does not allow tabs"
    elif "mapping values are not allowed" in problem or "expected <block end>" in problem:
        hint = "check the indentation of this line and the one above"
    elif context and exc.context_mark is not None:
        hint = f"{context} on line {exc.context_mark.line + 1}"
    return ConfigError(f"invalid YAML: {problem}", filename, mark.line + 1 if mark else None, hint)


# ---------------------------------------------------------------------------------------------
# YAML mapping -> Graph


class _Builder:
    """Turns the loaded YAML into a `Graph`, collecting schema errors in ``errors``."""

    def __init__(self, filename: str):
        self.file = filename
        self.errors: list[ConfigError] = []

    def error(self, line: int | None, message: str, hint: str | None = None) -> None:
        self.errors.append(ConfigError(message, self.file, line, hint))

    def unknown_keys(self, mapping: _Map, valid: tuple[str, ...], where: str) -> None:
        for key, line, first in mapping.duplicates:
            self.error(line, f"duplicate key '{key}'{where}", f"first given on line {first}")
        for key in mapping:
            if key not in valid:
                hint = did_you_mean(key, valid) or f"valid keys: {', '.join(valid)}"
                self.error(mapping.key_lines[key], f"unknown key '{key}'{where}", hint)

    def graph(self, data: Any) -> Graph:
        if not isinstance(data, _Map):
            self.error(
                getattr(data, "line", 1),
                f"the top level must be a mapping, got a {_type_name(data)}",
                "a pipeline is a mapping with 'name', 'steps' and optionally 'router'",
            )
            return Graph(name="", steps=(), file=self.file)
        self.unknown_keys(data, TOP_KEYS, "")
        lines = [(k, v) for k, v in data.key_lines.items() if isinstance(k, str)]
        name = data.get("name")
        if "name" not in data:
            stem = os.path.splitext(os.path.basename(self.file))[0]
            self.error(1, "missing top-level key 'name'", f"add 'name: {stem}'")
        elif not isinstance(name, str):
            self.error(data.key_lines["name"], f"'name' must be a string, got a {_type_name(name)}")
        description = data.get("description") or ""
        if not isinstance(description, str):
            self.error(data.key_lines["description"], "'description' must be a string")
            description = ""
        router, router_lines = self.router(data)
        return Graph(
            name=name if isinstance(name, str) else "",
            steps=self.steps(data),
            router=router,
            file=self.file,
            description=description,
            lines=tuple(lines + router_lines),
        )

    def steps(self, data: _Map) -> tuple[StepSpec, ...]:
        if "steps" not in data:
            self.error(
                data.line, "missing top-level key 'steps'", "add 'steps:' with a list of steps"
            )
            return ()
        items = data["steps"]
        if not isinstance(items, _Seq):
            self.error(
                data.key_lines["steps"],
                f"'steps' must be a list, got a {_type_name(items)}",
                "write each step as '- name: ...' under 'steps:'",
            )
            return ()
        specs = (
            self.step(item, line, i)
            for i, (item, line) in enumerate(zip(items, items.item_lines, strict=True))
        )
        return tuple(s for s in specs if s is not None)

    def step(self, item: Any, line: int, index: int) -> StepSpec | None:
        if not isinstance(item, _Map):
            self.error(
                line,
                f"step #{index + 1} must be a mapping, got a {_type_name(item)}",
                "write '- name: NAME' and 'use: module:Name' on the following lines",
            )
            return None
        name = item.get("name")
        label = f" in step '{name}'" if isinstance(name, str) else f" in step #{index + 1}"
        self.unknown_keys(item, STEP_KEYS, label)
        if "name" not in item:
            self.error(item.line, f"step #{index + 1} has no 'name'", "add 'name: NAME'")
            return None
        if not isinstance(name, str):
            self.error(
                item.key_lines["name"],
                f"step #{index + 1}: 'name' must be a string, got a {_type_name(name)}",
            )
            return None
        lines = {k: v for k, v in item.key_lines.items() if isinstance(k, str)}
        params = self.params(item, label, lines)
        use = item.get("use")
        kind = (
            item["kind"] if "kind" in item else (infer_kind(use) if use is not None else None) or ""
        )
        return StepSpec(
            name=name,
            kind=kind,
            use=use,
            params=params,
            to=self.targets(item, label),
            workers=self.workers(item, label, lines),
            pinned=item.get("pinned", False),
            file=self.file,
            line=item.line,
            lines=tuple(lines.items()),
        )

    def params(self, item: _Map, label: str, lines: dict[str, int]) -> tuple[tuple[str, Any], ...]:
        values = item.get("with")
        if values is None:
            return ()
        if not isinstance(values, _Map):
            self.error(
                item.key_lines["with"],
                f"'with'{label} must be a mapping of parameters, got a {_type_name(values)}",
                "write 'with: {name: value}'",
            )
            return ()
        for key, line, first in values.duplicates:
            self.error(line, f"duplicate parameter '{key}'{label}", f"first given on line {first}")
        lines.update({f"with.{k}": v for k, v in values.key_lines.items()})
        return tuple((str(k), _plain(v)) for k, v in values.items())

    def targets(self, item: _Map, label: str) -> tuple[str, ...]:
        to = item.get("to")
        if to is None:
            return ()
        if isinstance(to, str):
            return (to,)
        if isinstance(to, _Seq) and all(isinstance(t, str) for t in to):
            return tuple(to)
        self.error(
            item.key_lines["to"],
            f"'to'{label} must be a step name or a list of step names, got {_plain(to)!r}",
            "write 'to: [next_step]'",
        )
        return tuple(t for t in to if isinstance(t, str)) if isinstance(to, _Seq) else ()

    def workers(self, item: _Map, label: str, lines: dict[str, int]) -> Workers:
        value = item.get("workers", 1)
        if _is_int(value):
            return Workers(value, value)
        if not isinstance(value, _Map):
            self.error(
                item.key_lines["workers"],
                f"'workers'{label} must be N or {{min: N, max: M}}, got {_plain(value)!r}",
            )
            return Workers()
        self.unknown_keys(value, WORKER_KEYS, f" in 'workers'{label}")
        lines.update({f"workers.{k}": v for k, v in value.key_lines.items() if isinstance(k, str)})
        bounds = {k: value.get(k) for k in WORKER_KEYS if k in value}
        for key, v in bounds.items():
            if not _is_int(v):
                self.error(
                    value.key_lines[key], f"'workers.{key}'{label} must be an integer, got {v!r}"
                )
                return Workers()
        low = bounds.get("min", 1)
        return Workers(low, bounds.get("max", max(low, 1)))

    def router(self, data: _Map) -> tuple[RouterOptions, list[tuple[str, int]]]:
        values = data.get("router")
        if values is None:
            return RouterOptions(), []
        if not isinstance(values, _Map):
            self.error(
                data.key_lines["router"], f"'router' must be a mapping, got a {_type_name(values)}"
            )
            return RouterOptions(), []
        self.unknown_keys(values, tuple(ROUTER_TYPES), " in 'router'")
        options = {}
        for key, value in values.items():
            if key in ROUTER_TYPES:
                converted = _router_value(ROUTER_TYPES[key], value)
                if converted is None:
                    self.error(
                        values.key_lines[key],
                        f"router option '{key}' must be "
                        f"{ROUTER_TYPES[key].__name__}, got {value!r}",
                    )
                else:
                    options[key] = converted
        lines = [(f"router.{k}", v) for k, v in values.key_lines.items() if isinstance(k, str)]
        return RouterOptions(**options), lines


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _router_value(kind: type, value: Any) -> Any:
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _plain(value: Any) -> Any:
    """Loaded YAML with the line-carrying containers turned back into dict and list."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Command-line overrides


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
                value = _plain(yaml.load(value, Loader=_LineLoader)) if value.strip() else value
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


def _apply_overrides(graph: Graph, items: Any, errors: list[ConfigError]) -> Graph:
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


def _apply_workers(graph: Graph, items: Any, errors: list[ConfigError]) -> Graph:
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
