"""flow.engine.worker pieces that need no process: the consumer's bounded duplicate filter."""

from __future__ import annotations

from flow.engine.worker import SEEN_MAX, RecentSet


def test_recent_set_remembers_the_newest_and_forgets_the_oldest():
    s = RecentSet(3)
    for k in ("a", "b", "c", "b"):
        s.add(k)
    assert len(s) == 3 and all(k in s for k in "abc")
    s.add("d")
    assert "a" not in s and all(k in s for k in "bcd") and len(s) == 3


def test_window_covers_what_can_be_in_flight_to_one_consumer():
    from flow.graph.model import RouterOptions

    opts = RouterOptions()
    assert SEEN_MAX >= 4 * (opts.queue_limit + opts.prefetch * opts.batch_max)
