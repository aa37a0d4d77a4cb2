"""The pipeline graph as a frozen value, and its validation.

A `Graph` is a tuple of `StepSpec` (unique names) plus router options; edges are each step's ``to``.
It is built from YAML (`flow.config.load_graph`) or from Python (`step(...)`, ``a | b | c``,
``Graph(name, steps)``), and both give the same object. `validate` checks everything before any
process starts and raises `ConfigErrors` holding *all* the problems found, each with file, line and a
hint. A step's ``use`` is resolved by `resolve_use` ("module:Name", a short name in `REGISTRY`, or
the object itself).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import ConfigError, ConfigErrors, GraphError
from .params import declared_params, resolve_params
from .step import Step

KINDS = ("producer", "stager", "consumer")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: Short names usable as ``use:`` (``"toy-source": "stages.io.toy:ToyEventSource"``). Values are
#: "module:Name" strings (imported lazily) or the objects themselves. Same dict as flow.config.REGISTRY.
REGISTRY: dict[str, Any] = {}


@dataclass(frozen=True)
class Workers:
    """Worker bounds of a step: ``min == max`` is a static count."""

    min: int = 1
    max: int = 1


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RouterOptions:
    """Router settings (the YAML ``router:`` mapping). Each field's help is in its metadata."""

    queue_limit: int = _opt(1000, "events queued per step before upstream credit stops")
    queue_limit_bytes: int = _opt(256 << 20, "bytes queued per step before upstream credit stops")
    heartbeat_s: float = _opt(1.0, "seconds between heartbeats on the data sockets")
    liveness: int = _opt(10, "missed heartbeats before a worker is declared dead")
    max_retries: int = _opt(3, "failures of one event before it goes to the dead-letter file")
    stuck_timeout_s: float = _opt(60.0, "a worker busy on one event longer than this is killed")
    prefetch: int = _opt(4, "credit window per worker (messages in flight)")
    batch_max: int = _opt(64, "events per DATA message when queues are deep")
    cpu_budget: int = _opt(0, "cores shared by all workers; 0: the machine's cores")
    stats_interval_s: float = _opt(1.0, "seconds between statistics records")
    dead_letter: str = _opt(
        "flow-deadletter.jsonl", "file receiving events that failed max_retries times"
    )
    shm_threshold: int = _opt(
        64 << 10, "arrays of this many bytes or more travel via shared memory on one host (0: never)"
    )


ROUTER_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str}[str(f.type)] for f in fields(RouterOptions)
}
# lower bound of each numeric router option
_ROUTER_MIN = {
    "queue_limit": 1,
    "queue_limit_bytes": 1,
    "heartbeat_s": 1e-3,
    "liveness": 1,
    "max_retries": 0,
    "stuck_timeout_s": 1e-3,
    "prefetch": 1,
    "batch_max": 1,
    "cpu_budget": 0,
    "stats_interval_s": 1e-3,
    "shm_threshold": 0,
}


@dataclass(frozen=True)
class StepSpec:
    """One step: its name, kind, what it runs, its parameters and its downstream steps.

    ``use`` is ``"module:Name"``, a short name from `REGISTRY`, or the object itself (Python API).
    ``params`` are the values as written (`flow.params.resolve_params` gives the effective ones).
    ``lines`` maps keys (``"name"``, ``"use"``, ``"to"``, ``"with.picture"``...) to source lines for
    error messages; ``file`` is the file it came from (a YAML file, or the script calling `step`).
    """

    name: str
    kind: str  # "producer" | "stager" | "consumer"
    use: Any
    params: tuple[tuple[str, Any], ...] = ()
    to: tuple[str, ...] = ()
    workers: Workers = Workers()
    pinned: bool = False  # stays on the router host (never placed on an agent)
    file: str | None = None
    line: int | None = None
    lines: tuple[tuple[str, int], ...] = ()

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def line_of(self, key: str) -> int | None:
        return dict(self.lines).get(key, self.line)

    def __or__(self, other: StepSpec | Chain) -> Chain:
        return Chain((self,)) | other


@dataclass(frozen=True)
class Chain:
    """A linear chain built with ``source | stage | sink``; `graph()` links and validates it."""

    steps: tuple[StepSpec, ...]

    def __or__(self, other: StepSpec | Chain) -> Chain:
        more = other.steps if isinstance(other, Chain) else (other,)
        return Chain(self.steps + more)

    def graph(
        self, name: str = "pipeline", router: RouterOptions | None = None, check: bool = True
    ) -> Graph:
        """Link each step to the next (keeping any ``to`` it already had) and validate."""
        linked = [
            s if nxt.name in s.to else replace(s, to=s.to + (nxt.name,))
            for s, nxt in zip(self.steps, self.steps[1:], strict=False)
        ]
        linked.append(self.steps[-1])
        graph = Graph(name=name, steps=tuple(linked), router=router or RouterOptions())
        return validate(graph) if check else graph


@dataclass(frozen=True)
class Graph:
    """A pipeline: steps in declaration order plus router options. Check it with `validate`."""

    name: str
    steps: tuple[StepSpec, ...]
    router: RouterOptions = field(default_factory=RouterOptions)
    file: str | None = None
    description: str = ""
    lines: tuple[tuple[str, int], ...] = ()  # top-level keys ("steps", "router.prefetch") -> line

    def __getitem__(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    @property
    def producers(self) -> tuple[StepSpec, ...]:
        return tuple(s for s in self.steps if s.kind == "producer")

    @property
    def consumers(self) -> tuple[StepSpec, ...]:
        return tuple(s for s in self.steps if s.kind == "consumer")

    def inputs(self, name: str) -> tuple[str, ...]:
        """Names of the steps with an edge into ``name``."""
        return tuple(s.name for s in self.steps if name in s.to)

    def line_of(self, key: str) -> int | None:
        return dict(self.lines).get(key)

    def validate(self) -> Graph:
        return validate(self)


# ---------------------------------------------------------------------------------------------
# Python API


def step(
    name: str,
    use: Any,
    kind: str | None = None,
    to: str | Iterable[str] = (),
    workers: int | tuple[int, int] | Workers = 1,
    pinned: bool = False,
    **params: Any,
) -> StepSpec:
    """Build a `StepSpec` from Python; ``use`` may be a class, a function or "module:Name".

    ``kind`` defaults to the class's kind (a plain function is a stager). ``workers`` is N, (min, max)
    or `Workers`. The caller's file and line are recorded, so errors point at the script.
    """
    caller = sys._getframe(1)
    if kind is None:
        kind = infer_kind(use) or ""
    targets = (to,) if isinstance(to, str) else tuple(to)
    if isinstance(workers, int):
        workers = Workers(workers, workers)
    elif not isinstance(workers, Workers):
        workers = Workers(*workers)
    return StepSpec(
        name=name,
        kind=kind,
        use=use,
        params=tuple(params.items()),
        to=targets,
        workers=workers,
        pinned=pinned,
        file=caller.f_code.co_filename,
        line=caller.f_lineno,
    )


def infer_kind(use: Any) -> str | None:
    """The kind a ``use`` implies: its class's kind, "stager" for a function; None if unresolvable."""
    try:
        obj = resolve_use(use)
    except ConfigError:
        return None
    if inspect.isclass(obj) and issubclass(obj, Step):
        return obj.kind or None
    return "stager" if callable(obj) else None


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest option, or None."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else None


def use_label(use: Any) -> str:
    """``module:Name`` for an object, the string itself for a string."""
    if isinstance(use, str):
        return use
    module = getattr(use, "__module__", None)
    qual = getattr(use, "__qualname__", None) or getattr(use, "__name__", None)
    return f"{module}:{qual}" if module and qual else repr(use)


# ---------------------------------------------------------------------------------------------
# Resolving ``use``


def resolve_use(use: Any) -> Any:
    """The class or function ``use`` names. Raises `ConfigError` (no file/line) saying what failed."""
    if not isinstance(use, str):
        if use is None:
            raise ConfigError("no 'use' given", hint="add 'use: package.module:Name'")
        return use
    if ":" in use:
        module_name, _, attr = use.partition(":")
    elif use in REGISTRY:
        target = REGISTRY[use]
        return resolve_use(target) if isinstance(target, str) and ":" in target else target
    elif "." in use:
        module_name, _, attr = use.rpartition(".")
    else:
        hint = did_you_mean(use, REGISTRY) or "write it as 'package.module:Name'"
        raise ConfigError(
            f"'{use}' is neither 'module:Name' nor a registered short name", hint=hint
        )
    if not module_name or not attr:
        raise ConfigError(f"'{use}' is not of the form 'module:Name'")
    return _getattr_path(_import_module(module_name), module_name, attr)


def _import_module(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"cannot import module '{module_name}': no module named '{missing}'",
                hint=_sibling_hint(missing),
            ) from None
        raise ConfigError(
            f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    except Exception as exc:  # a module that fails on import must not crash validation
        raise ConfigError(
            f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from None


def _sibling_hint(missing: str) -> str:
    parent, _, leaf = missing.rpartition(".")
    if not parent:
        return "check the spelling, and that the package is installed or in the current directory"
    try:
        package = importlib.import_module(parent)
        siblings = [m.name for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
    except Exception:
        siblings = []
    full = [f"{parent}.{name}" for name in siblings]
    return (
        did_you_mean(missing, full) or f"modules in '{parent}': {', '.join(sorted(full)) or 'none'}"
    )


def _getattr_path(obj: Any, module_name: str, attr: str) -> Any:
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = [n for n in dir(obj) if not n.startswith("_")]
            raise ConfigError(
                f"module '{module_name}' has no attribute '{attr}'", hint=did_you_mean(part, public)
            ) from None
    return obj


# ---------------------------------------------------------------------------------------------
# Validation


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
    errors += _check_shape(graph, doubtful, partial)
    return sort_errors(errors)


def sort_errors(errors: list[ConfigError]) -> list[ConfigError]:
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0))


def _err(
    spec: StepSpec,
    key: str,
    message: str,
    hint: str | None = None,
    cls: type[ConfigError] = ConfigError,
) -> ConfigError:
    return cls(f"step '{spec.name}': {message}", spec.file, spec.line_of(key), hint)


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
                "subclass flow.step.Producer and yield events from process()",
            )
        ]
    return _check_function_params(spec, obj, label)


def _check_class_params(spec: StepSpec, cls: type, label: str) -> list[ConfigError]:
    declared = declared_params(cls)
    valid = f"valid: {', '.join(declared)}" if declared else f"{label} takes no parameters"
    errors = []
    for name, value in spec.params:
        if name not in declared:
            hint = " ".join(h for h in (did_you_mean(name, declared), valid) if h)
            errors.append(
                _err(spec, f"with.{name}", f"unknown parameter '{name}' for {label}", hint)
            )
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
    errors = []
    for name, _ in spec.params:
        if name not in names:
            hint = " ".join(h for h in (did_you_mean(name, names), valid) if h)
            errors.append(
                _err(spec, f"with.{name}", f"unknown parameter '{name}' for {label}", hint)
            )
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


def _check_shape(graph: Graph, doubtful: set[str], partial: bool) -> list[ConfigError]:
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
                _err(
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
                    _err(spec, "to", f"unknown target '{target}' in 'to'", hint, GraphError)
                )
            elif by_name[target].kind == "producer" and target not in doubtful:
                errors.append(
                    _err(
                        spec,
                        "to",
                        f"sends to producer '{target}', but producers take no inputs",
                        f"remove '{target}' from 'to', or make '{target}' a stager",
                        GraphError,
                    )
                )
        if len(set(spec.to)) != len(spec.to):
            errors.append(_err(spec, "to", "a target is listed twice in 'to'", None, GraphError))
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
            _err(
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
        _err(
            s,
            "name",
            "not reachable from any producer",
            f"add '{s.name}' to the 'to' of an upstream step, or remove it",
            GraphError,
        )
        for s in graph.steps
        if s.name not in reached
    ]
