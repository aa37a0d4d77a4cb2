"""The restart policy: what the router does when a worker of a step is lost.

Pure, in the spirit of Flink's restart strategies (exponential delay, bounded by a failure rate):
a step's `RestartState`, the cause of a loss and the time go in; a `Decision` and the next state
come out. No clock of its own, no sockets, no processes: the router (flow/engine/router/lifecycle.py)
applies the decisions, and tests drive the policy with a fake clock.

Causes (`classify` names them from what the router saw):

- ``setup``: the step's ``setup`` raised (the worker sent FAILED): a bug in the step or its
  configuration, so the run fails at once, with the traceback;
- ``signal``: the process exited on a signal (kill -9, the OOM killer, a preempted node);
- ``exit``: the process exited without reporting an error (any exit code);
- ``silent``: the worker stopped heartbeating (the router killed it);
- ``agent``: the agent that ran it vanished.

Every cause but ``setup`` is a fault from outside the step: the worker is replaced after an
exponential back-off, ``base_delay_s × 2^(k-1)`` for the k-th consecutive loss, capped at
``max_delay_s``. The count of consecutive losses restarts at 0 whenever a worker of the step
becomes READY. A step is given up only when no worker of it has become ready while at least
``give_up_failures`` (10) of its workers were lost in a row over at least ``give_up_s`` (60 s):
both bounds must be passed, so chaos at start-up cannot exhaust them quickly, and a worker that
dies in ``setup`` without raising (a crash in a C extension) still ends the run in about a minute.

A producer is replaced only when its step is replayable (`flow.graph.step.Producer.replayable`):
the replacement resumes after the last event the router accepted. A producer that is not
replayable ends the run; its outputs hold every acknowledged event, and ``flow run --resume``
completes it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace

SETUP, SIGNAL, EXIT, SILENT, AGENT = "setup", "signal", "exit", "silent", "agent"
RESTART, FAIL, GIVE_UP = "restart", "fail", "give_up"


@dataclass(frozen=True)
class RestartPolicy:
    """The bounds of the policy (see the module docstring)."""

    base_delay_s: float = 0.1
    max_delay_s: float = 5.0
    give_up_failures: int = 10
    give_up_s: float = 60.0


@dataclass(frozen=True)
class RestartState:
    """One step's record: consecutive losses since a worker of it was last ready, when the
    first of them happened, replacements decided so far, and when the next may start."""

    failures: int = 0
    since: float = 0.0
    restarts: int = 0
    not_before: float = 0.0


@dataclass(frozen=True)
class Decision:
    """What to do about one lost worker, and why."""

    action: str          # RESTART, FAIL or GIVE_UP
    cause: str
    delay_s: float
    reason: str

    def to_dict(self, step: str, t: float) -> dict:
        """The decision as a record of the statistics stream (docs/monitoring.md)."""
        return {"t": t, "step": step, "action": self.action, "cause": self.cause,
                "delay_s": round(self.delay_s, 3), "reason": self.reason}


def classify(returncode: int | None, silent_s: float | None = None,
             agent_lost: bool = False) -> tuple[str, str]:
    """(cause, words) of a worker lost without reporting an error: its process's return code
    (None when unknown: remote, or still running), how long it was silent (when that is why),
    and whether its agent vanished."""
    if agent_lost:
        return AGENT, "its agent vanished"
    if silent_s is not None:
        return SILENT, f"silent for {silent_s:.1f} s"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return SIGNAL, f"killed by {name}"
    if returncode is None:
        return EXIT, "process exited"
    return EXIT, f"exited with code {returncode} without reporting an error"


def on_loss(state: RestartState, cause: str, words: str, now: float,
            policy: RestartPolicy = RestartPolicy(), replayable: bool = True
            ) -> tuple[RestartState, Decision]:
    """The next state and the decision for a worker lost at ``now`` (see the module docstring);
    ``replayable``: False for a producer that cannot resume."""
    if cause == SETUP:
        return state, Decision(FAIL, cause, 0.0, f"setup raised: {words}")
    if not replayable:
        return state, Decision(FAIL, cause, 0.0,
                               f"{words}; it is not replayable, so it cannot resume: the outputs "
                               f"hold every acknowledged event, run again with --resume to "
                               f"complete the run")
    failures = state.failures + 1
    since = state.since if state.failures else now
    if failures >= policy.give_up_failures and now - since >= policy.give_up_s:
        return replace(state, failures=failures, since=since), Decision(
            GIVE_UP, cause, 0.0,
            f"{words}; no worker became ready after {failures} losses in a row over "
            f"{now - since:.0f} s (bounds: {policy.give_up_failures} losses and "
            f"{policy.give_up_s:.0f} s)")
    delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** (failures - 1))
    nxt = RestartState(failures, since, state.restarts + 1, max(state.not_before, now + delay))
    return nxt, Decision(RESTART, cause, delay,
                         f"{words}; replaced after {delay:.2f} s (loss {failures} in a row)")


def on_ready(state: RestartState) -> RestartState:
    """A worker of the step became ready: the count of consecutive losses starts again."""
    return replace(state, failures=0, since=0.0)


def due(state: RestartState, now: float) -> bool:
    """Whether a replacement decided earlier may start now."""
    return now >= state.not_before


__all__ = ["AGENT", "EXIT", "FAIL", "GIVE_UP", "RESTART", "SETUP", "SIGNAL", "SILENT",
           "Decision", "RestartPolicy", "RestartState", "classify", "due", "on_loss", "on_ready"]
