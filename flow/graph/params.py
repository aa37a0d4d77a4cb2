"""Parameters declared on step classes.

A step declares its options as class attributes::

    class TailcutsCleaning(Stager):
        picture = Param(float, 10.0, "picture threshold in p.e.")

The engine fills them from the YAML ``with:`` mapping; an unknown name or a value that cannot be
converted to the declared type is a `ConfigError`. `describe_params` lists every effective option
(name, type, default, value, help) for ``flow show-config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One declared option: its type, default and help text.

    ``type`` is a callable converting a YAML value (``int``, ``float``, ``str``, ``bool``, ``dict``,
    ``list`` or any one-argument callable). ``default=REQUIRED`` makes the option mandatory.
    ``choices`` restricts the value to a set; ``min`` and ``max`` bound it (inclusive).
    """

    type: Any = str
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    name: str = ""
    min: Any = None
    max: Any = None

    def __set_name__(self, owner, name):
        object.__setattr__(self, "name", name)

    def __get__(self, instance, owner):
        if instance is None:
            return self
        try:
            return instance.__dict__["_params"][self.name]
        except KeyError:
            return self.default

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, value: Any) -> Any:
        """Convert a YAML value to the declared type; raise ValueError with a readable message."""
        if value is None and self.type is not bool:
            return None
        if self.type is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
                out = True
            elif isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
                out = False
            elif isinstance(value, int) and value in (0, 1):
                out = bool(value)
            else:
                raise ValueError(f"expected true or false, got {value!r}")
        elif self.type is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif self.type is int and isinstance(value, float) and value.is_integer():
            out = int(value)
        elif isinstance(self.type, type) and isinstance(value, self.type):
            out = value
        elif self.type in (dict, list) :
            raise ValueError(f"expected a {self.type.__name__}, got {value!r}")
        else:
            try:
                out = self.type(value)
            except (TypeError, ValueError) as exc:
                tname = getattr(self.type, "__name__", str(self.type))
                raise ValueError(f"expected {tname}, got {value!r} ({exc})") from None
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"must be one of {list(self.choices)}, got {out!r}")
        if self.min is not None and out < self.min:
            raise ValueError(f"must be at least {self.min}, got {out!r}")
        if self.max is not None and out > self.max:
            raise ValueError(f"must be at most {self.max}, got {out!r}")
        return out


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


def declared_params(cls) -> dict[str, Param]:
    """All `Param`s declared on a class and its bases, in declaration order."""
    out: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Param):
                out[name] = value
    return out


def resolve_params(cls, values: dict[str, Any]) -> dict[str, Any]:
    """Check ``values`` against the class's declared params; return the full effective mapping.

    Raises ``KeyError(name)`` for an unknown name and ``ValueError`` (message names the param) for a
    bad value or a missing required one; callers turn these into `ConfigError` with file and line.
    """
    declared = declared_params(cls)
    out: dict[str, Any] = {}
    for name in values:
        if name not in declared:
            raise KeyError(name)
    for name, param in declared.items():
        if name in values:
            try:
                out[name] = param.convert(values[name])
            except ValueError as exc:
                raise ValueError(f"parameter '{name}': {exc}") from None
        elif param.required:
            raise ValueError(f"parameter '{name}' is required ({param.help})")
        else:
            out[name] = param.default
    return out


def describe_params(cls, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows (name, type, default, value, help) for every declared param of ``cls``."""
    effective = resolve_params(cls, values or {})
    rows = []
    for name, param in declared_params(cls).items():
        rows.append({
            "name": name,
            "type": getattr(param.type, "__name__", str(param.type)),
            "default": param.default,
            "value": effective[name],
            "help": param.help,
        })
    return rows
