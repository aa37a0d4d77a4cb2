"""stages.io.ctapipe_time: CTAO high-resolution timestamps, as ctapipe makes them."""

from __future__ import annotations

import numpy as np
import pytest

from stages.io.ctapipe_time import ns_after, trigger_times, unix_to_ctao_high_res

CENTRAL = (1_300_000_000, 123_456_789)
OFFSETS = [0.0, 12.5, -3.25, 1e6, 7.75, 250.125]


def test_an_events_telescope_times_in_one_call_equal_one_call_each():
    together = ns_after(CENTRAL, OFFSETS)
    assert together.shape == (len(OFFSETS), 2) and together.dtype == np.uint32
    assert np.array_equal(together, np.array([ns_after(CENTRAL, o) for o in OFFSETS]))


def test_times_equal_ctapipes():
    pytest.importorskip("ctapipe")
    import astropy.units as u
    from astropy.time import Time
    from ctapipe.time import time_to_ctao_high_res

    central = Time(CENTRAL[0], CENTRAL[1] * 1e-9, format="unix", scale="utc")
    assert np.array_equal(unix_to_ctao_high_res(*CENTRAL), time_to_ctao_high_res(central))
    theirs = time_to_ctao_high_res(central + u.Quantity(OFFSETS, u.ns))
    assert np.abs(ns_after(CENTRAL, OFFSETS).astype(np.int64) - theirs.astype(np.int64)).max() <= 1


def test_a_runs_trigger_times_in_one_call_equal_one_event_at_a_time():
    triggers = {7: {"gps_time": CENTRAL, "tels": [1, 4, 9], "times_ns": OFFSETS[:3]},
                8: {"gps_time": (CENTRAL[0] + 1, 999_999_999), "tels": [2], "times_ns": [3.5]},
                9: {"gps_time": (1_483_228_799, 500), "tels": [], "times_ns": []},  # a leap second
                10: {"gps_time": CENTRAL, "tels": [3, 5], "times_ns": [1.0]}}  # fewer times
    out = trigger_times(triggers)
    assert set(out) == set(triggers) and trigger_times({}) == {}
    for event_id, trigger in triggers.items():
        central, tels = out[event_id]
        assert np.array_equal(central, unix_to_ctao_high_res(*trigger["gps_time"]))
        expected = dict(zip(trigger["tels"], trigger["times_ns"], strict=False))
        assert set(tels) == set(expected)
        for tel_id, offset in expected.items():
            assert np.array_equal(tels[tel_id], ns_after(trigger["gps_time"], offset)), tel_id


def test_trigger_rows_convert_the_times_themselves_as_the_writer_does_for_a_run():
    from stages.io.ctapipe_events import trigger_rows
    trigger = {"gps_time": CENTRAL, "tels": [1, 4, 9], "times_ns": OFFSETS[:3]}
    event = {"obs_id": 1, "event_id": 7, "tels": {1: {}, 4: {}}}
    alone = trigger_rows(event, [1, 2, 4, 9], trigger)
    given = trigger_rows(event, [1, 2, 4, 9], trigger, trigger_times({7: trigger})[7])
    assert [k for k, _ in alone] == [k for k, _ in given] and len(alone) == 4
    for (_, a), (_, b) in zip(alone, given, strict=True):
        assert a.tobytes() == b.tobytes()
