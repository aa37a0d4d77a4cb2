"""The pipeline graph as a frozen value (its validation lives in `flow.graph.validation`).

A `Graph` is a tuple of `StepSpec` (unique names) plus router options; edges are each step's ``to``.
It is built from YAML (`flow.graph.loader.load_graph`) or from Python (`step(...)`, ``a | b | c``,
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
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from flow.errors import ConfigError
from flow.graph.step import Step

KINDS = ("producer", "stager", "consumer")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

#: Short names usable as ``use:`` (``"toy-source": "stages.io.toy:ToyEventSource"``). Values are
#: "module:Name" strings (imported lazily) or the objects themselves. Same dict as flow.graph.loader.REGISTRY.
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
    queue_limit_bytes: int = _opt(32 << 20, "bytes queued per step before upstream credit stops")
    heartbeat_s: float = _opt(1.0, "seconds between heartbeats on the data sockets")
    liveness: int = _opt(10, "missed heartbeats before a worker is declared dead")
    max_retries: int = _opt(3, "failures of one event before it goes to the dead-letter file")
    stuck_timeout_s: float = _opt(60.0, "a worker busy on one event longer than this is killed")
    prefetch: int = _opt(4, "credit window per worker (messages in flight)")
    batch_max: int = _opt(256, "events per DATA message when queues are deep")
    lease_s: float = _opt(
        0.05, "target seconds of a step's work per DATA message: a slow step gets smaller batches"
    )
    cpu_budget: int = _opt(0, "cores shared by all workers; 0: the machine's cores")
    stats_interval_s: float = _opt(1.0, "seconds between statistics records")
    dead_letter: str = _opt(
        "flow-deadletter.jsonl", "file receiving events that failed max_retries times"
    )
    shm_threshold: int = _opt(
        64 << 10, "arrays of this many bytes or more travel via shared memory on one host (0: never)"
    )
    start_method: str = _opt(
        "zygote", "how local workers start: zygote (forked from a warm template) or spawn"
    )
    fuse: bool = _opt(
        True, "consecutive stagers on a linear path run in one worker process (flow/graph/fusion.py)"
    )


ROUTER_TYPES: dict[str, type] = {
    f.name: {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
    for f in fields(RouterOptions)
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
    "lease_s": 1e-3,
    "cpu_budget": 0,
    "stats_interval_s": 1e-3,
    "shm_threshold": 0,
}


@dataclass(frozen=True)
class StepSpec:
    """One step: its name, kind, what it runs, its parameters and its downstream steps.

    ``use`` is ``"module:Name"``, a short name from `REGISTRY`, or the object itself (Python API).
    ``params`` are the values as written (`flow.graph.params.resolve_params` gives the effective ones).
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
    fuse: bool = True  # may run fused with its neighbours in one worker (flow/graph/fusion.py)
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
    fuse: bool = True,
    **params: Any,
) -> StepSpec:
    """Build a `StepSpec` from Python; ``use`` may be a class, a function or "module:Name".

    ``kind`` defaults to the class's kind (a plain function is a stager). ``workers`` is N, (min, max)
    or `Workers`; ``fuse=False`` keeps a stager in workers of its own (never fused). The caller's file and line are recorded, so errors point at the script.
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
        fuse=fuse,
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


# re-exported; imported last because validation reads the types above
from flow.graph.validation import check as check  # noqa: E402
from flow.graph.validation import sort_errors as sort_errors  # noqa: E402
from flow.graph.validation import validate as validate  # noqa: E402
