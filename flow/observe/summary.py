"""The end-of-run summary (`flow run --summary-json`) and the exit codes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

EXIT_OK = 0            # every event reached its consumers
EXIT_PARTIAL = 1       # the run finished, but some events went to the dead-letter file
EXIT_CONFIG = 2        # the pipeline description is wrong (nothing was started)
EXIT_FAILED = 3        # a step failed in setup/teardown, a producer or the router failed
EXIT_ABORTED = 130     # interrupted (SIGINT/SIGTERM: drained, or aborted by a second signal);
                       # outputs are valid and hold what was acknowledged; `--resume` completes

EXIT_CODES = {
    EXIT_OK: "success", EXIT_PARTIAL: "partial success (dead letters)",
    EXIT_CONFIG: "configuration error", EXIT_FAILED: "run failed", EXIT_ABORTED: "aborted",
}


@dataclass
class RunSummary:
    """What a run did. ``consumed`` counts events each consumer acknowledged; ``unique_consumed``
    those it kept after dropping duplicates by (key, path); ``restarts`` the workers of each step
    replaced after a loss (flow/engine/restart.py; a producer's replacement resumed its stream)."""

    produced: int = 0
    consumed: dict[str, int] = field(default_factory=dict)
    unique_consumed: dict[str, int] = field(default_factory=dict)
    dead_letter: int = 0
    retries: int = 0
    errors: int = 0
    wall_s: float = 0.0
    eos_exit_s: float | None = None
    workers_started: int = 0
    workers_retired: int = 0
    rejected: int = 0
    state: str = "finished"
    failures: list[str] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)   # workers replaced after a loss
    warnings: list[str] = field(default_factory=list)        # inputs cut short (file, last event)
    exit_code: int = EXIT_OK
    dead_letter_file: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def write_json(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def decide_exit_code(self) -> int:
        if self.state in ("aborted", "stopped"):
            code = EXIT_ABORTED
        elif self.failures:
            code = EXIT_FAILED
        elif self.dead_letter:
            code = EXIT_PARTIAL
        else:
            code = EXIT_OK
        self.exit_code = code
        return code
