"""Every exception flow raises on purpose.

`FlowError` is the base; each family below says when it is raised. Lower-layer errors (zmq, msgpack,
yaml, importlib) are translated at the boundary, so users never see a bare ZMQError or KeyError.
"""

from __future__ import annotations


class FlowError(Exception):
    """Base of every error flow raises on purpose."""


class ConfigError(FlowError):
    """A pipeline description is wrong: raised while loading or validating YAML or a Python graph.

    Carries the file and line of the offending key (when known) and a hint on how to fix it; `str()`
    gives ``FILE:LINE: message (hint)``, the format `flow validate` prints.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 hint: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.message}{hint}"


class GraphError(ConfigError):
    """The graph's shape is wrong: unknown targets, cycles, unreachable steps, a consumer with outputs."""


class ConfigErrors(ConfigError):
    """Several `ConfigError`s found in one pass; `errors` holds them in file order."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, first.file, first.line, first.hint)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in getattr(self, "errors", []))


class ProtocolError(FlowError):
    """A frame on a socket is malformed, truncated, of another protocol version, or hostile.

    The receiver drops the message, counts it, and goes on: it is never executed.
    """


class StepError(FlowError):
    """A step's code failed (`setup`, `process` or `teardown`). Names the step and keeps the traceback."""

    def __init__(self, step: str, phase: str, message: str, traceback: str = ""):
        self.step = step
        self.phase = phase
        self.traceback = traceback
        super().__init__(f"step '{step}' failed in {phase}: {message}")


class RunError(FlowError):
    """A run could not go on: the router died, a worker could not start, or the run was aborted."""


class DataError(FlowError):
    """Input data is missing, corrupt or truncated (raised by sources, with the file name)."""
