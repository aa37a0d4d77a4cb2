"""Pipeline YAML -> `flow.graph.model.Graph`, with FILE:LINE on every error.

The YAML is read with a SafeLoader that records the line of every mapping key, so that each
`ConfigError` names the line of the key at fault. Loading collects *all* problems (YAML schema here,
then the graph's own checks in `flow.graph.model.check`) and raises one `ConfigErrors`. Command-line
overrides (``--set STEP.PARAM=VALUE``, ``--workers STEP=N`` or ``STEP=MIN:MAX``) are applied before
validation. ``use:`` accepts "module:Name" or a short name registered in `REGISTRY`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from flow.errors import ConfigError, ConfigErrors
from flow.graph.model import (
    REGISTRY,
    ROUTER_TYPES,
    Graph,
    RouterOptions,
    StepSpec,
    Workers,
    check,
    did_you_mean,
    infer_kind,
    sort_errors,
)
from flow.graph.overrides import apply_overrides, apply_workers, parse_overrides, parse_workers
from flow.graph.yaml_lines import LineLoader, Map, Seq, plain

__all__ = ["REGISTRY", "load_graph", "graph_from_text", "parse_overrides", "parse_workers"]

TOP_KEYS = ("name", "description", "steps", "router")
STEP_KEYS = ("name", "kind", "use", "with", "to", "workers", "pinned", "fuse")
WORKER_KEYS = ("min", "max")


def _type_name(value: Any) -> str:
    return {
        dict: "mapping",
        Map: "mapping",
        list: "list",
        Seq: "list",
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
    graph = apply_overrides(graph, overrides, builder.errors)
    graph = apply_workers(graph, workers, builder.errors)
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
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
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

    def unknown_keys(self, mapping: Map, valid: tuple[str, ...], where: str) -> None:
        for key, line, first in mapping.duplicates:
            self.error(line, f"duplicate key '{key}'{where}", f"first given on line {first}")
        for key in mapping:
            if key not in valid:
                hint = did_you_mean(key, valid) or f"valid keys: {', '.join(valid)}"
                self.error(mapping.key_lines[key], f"unknown key '{key}'{where}", hint)

    def graph(self, data: Any) -> Graph:
        if not isinstance(data, Map):
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

    def steps(self, data: Map) -> tuple[StepSpec, ...]:
        if "steps" not in data:
            self.error(
                data.line, "missing top-level key 'steps'", "add 'steps:' with a list of steps"
            )
            return ()
        items = data["steps"]
        if not isinstance(items, Seq):
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
        if not isinstance(item, Map):
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
            fuse=item.get("fuse", True),
            file=self.file,
            line=item.line,
            lines=tuple(lines.items()),
        )

    def params(self, item: Map, label: str, lines: dict[str, int]) -> tuple[tuple[str, Any], ...]:
        values = item.get("with")
        if values is None:
            return ()
        if not isinstance(values, Map):
            self.error(
                item.key_lines["with"],
                f"'with'{label} must be a mapping of parameters, got a {_type_name(values)}",
                "write 'with: {name: value}'",
            )
            return ()
        for key, line, first in values.duplicates:
            self.error(line, f"duplicate parameter '{key}'{label}", f"first given on line {first}")
        lines.update({f"with.{k}": v for k, v in values.key_lines.items()})
        return tuple((str(k), plain(v)) for k, v in values.items())

    def targets(self, item: Map, label: str) -> tuple[str, ...]:
        to = item.get("to")
        if to is None:
            return ()
        if isinstance(to, str):
            return (to,)
        if isinstance(to, Seq) and all(isinstance(t, str) for t in to):
            return tuple(to)
        self.error(
            item.key_lines["to"],
            f"'to'{label} must be a step name or a list of step names, got {plain(to)!r}",
            "write 'to: [next_step]'",
        )
        return tuple(t for t in to if isinstance(t, str)) if isinstance(to, Seq) else ()

    def workers(self, item: Map, label: str, lines: dict[str, int]) -> Workers:
        value = item.get("workers", 1)
        if _is_int(value):
            return Workers(value, value)
        if not isinstance(value, Map):
            self.error(
                item.key_lines["workers"],
                f"'workers'{label} must be N or {{min: N, max: M}}, got {plain(value)!r}",
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

    def router(self, data: Map) -> tuple[RouterOptions, list[tuple[str, int]]]:
        values = data.get("router")
        if values is None:
            return RouterOptions(), []
        if not isinstance(values, Map):
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
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value)
