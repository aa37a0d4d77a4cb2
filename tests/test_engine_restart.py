"""The restart policy (flow/engine/restart.py), driven with a fake clock."""

from __future__ import annotations

import signal

import pytest

from flow.engine import restart as R
from flow.graph.step import Producer


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lose(state, clock, cause=R.SIGNAL, words="killed by SIGKILL", **kw):
    return R.on_loss(state, cause, words, clock(), **kw)


def test_classify_tells_causes_apart():
    assert R.classify(-signal.SIGKILL) == (R.SIGNAL, "killed by SIGKILL")
    assert R.classify(-signal.SIGSEGV)[1] == "killed by SIGSEGV"
    assert R.classify(0) == (R.EXIT, "exited with code 0 without reporting an error")
    assert R.classify(3)[0] == R.EXIT
    assert R.classify(None) == (R.EXIT, "process exited")
    assert R.classify(None, silent_s=7.25) == (R.SILENT, "silent for 7.2 s")
    assert R.classify(None, agent_lost=True)[0] == R.AGENT


def test_setup_error_fails_fast_and_keeps_the_state():
    state = R.RestartState()
    new, d = R.on_loss(state, R.SETUP, "StepError: boom", 5.0)
    assert d.action == R.FAIL and "boom" in d.reason and new == state


def test_back_off_doubles_up_to_the_cap_and_ready_resets_it():
    clock, state = Clock(), R.RestartState()
    delays = []
    for _ in range(8):
        state, d = lose(state, clock)
        assert d.action == R.RESTART
        delays.append(d.delay_s)
        assert not R.due(state, clock()) and R.due(state, clock() + d.delay_s)
        clock.t += d.delay_s
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert state.failures == 8 and state.restarts == 8
    state = R.on_ready(state)
    state, d = lose(state, clock)
    assert d.delay_s == 0.1 and state.failures == 1 and state.restarts == 9


@pytest.mark.parametrize("cause", [R.SIGNAL, R.EXIT, R.SILENT, R.AGENT])
def test_gives_up_only_after_both_bounds(cause):
    policy = R.RestartPolicy(give_up_failures=10, give_up_s=60.0)
    clock, state = Clock(), R.RestartState()
    for _ in range(30):               # 30 losses in 3 s: chaos, not a broken step
        state, d = lose(state, clock, cause, policy=policy)
        assert d.action == R.RESTART
        clock.t += 0.1
    clock.t += 57.0                   # 60 s since the first loss, no worker ready
    state, d = lose(state, clock, cause, policy=policy)
    assert d.action == R.GIVE_UP and "31 losses in a row over 60 s" in d.reason


def test_a_slow_crash_loop_is_given_up_near_the_time_bound():
    policy = R.RestartPolicy()
    clock, state = Clock(), R.RestartState()
    n = 0
    while True:
        state, d = lose(state, clock, R.EXIT, "exited with code 1", policy=policy)
        n += 1
        if d.action != R.RESTART:
            break
        clock.t += d.delay_s + 1.0        # each replacement dies 1 s after it starts
    assert d.action == R.GIVE_UP
    assert 10 <= n <= 20 and 60 <= clock() - 1000.0 < 70


def test_not_replayable_fails_and_points_at_resume():
    _, d = lose(R.RestartState(), Clock(), replayable=False)
    assert d.action == R.FAIL and "--resume" in d.reason and "not replayable" in d.reason


def test_decision_record():
    _, d = lose(R.RestartState(), Clock())
    rec = d.to_dict("clean", 12.5)
    assert rec == {"t": 12.5, "step": "clean", "action": "restart", "cause": "signal",
                   "delay_s": 0.1, "reason": rec["reason"]}
    assert "killed by SIGKILL" in rec["reason"]


def test_default_resume_skips_the_events_already_accepted():
    class Src(Producer):
        def process(self):
            for i in range(6):
                yield None if i == 2 else i

    assert list(Src().resume(0)) == [0, 1, 3, 4, 5]
    assert list(Src().resume(2)) == [3, 4, 5]      # None is not an event
    assert Src.replayable is False


def test_replayable_declarations():
    from stages.io.dl1 import DL1Source
    from stages.io.simtel import SimtelSource
    from stages.io.toy import ToyEventSource
    assert SimtelSource.replayable and DL1Source.replayable and ToyEventSource.replayable
    a = ToyEventSource(n_events=20, seed=3, with_waveforms=False)
    keys = [k.key for k in a.process()]
    assert [k.key for k in a.resume(7)] == keys[7:]
