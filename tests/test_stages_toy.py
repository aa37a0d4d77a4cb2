"""ToyEventSource and the toy geometries: determinism, layout, neighbours equal to ctapipe's."""

import itertools

import astropy.units as u
import numpy as np
import pytest

from flow.graph.step import Keyed
from stages.io.geometry import hex_camera, neighbor_lists, square_camera
from stages.io.toy import ToyEventSource


def events(**params):
    return [k.event for k in ToyEventSource(**params).process()]


def test_events_are_keyed_and_follow_the_schema():
    src = ToyEventSource(n_events=5, seed=3)
    out = list(src.process())
    assert all(isinstance(o, Keyed) for o in out)
    assert [o.key for o in out] == [f"1:{i}" for i in range(1, 6)]
    ctx = src.publish_context()["subarray"]
    for o in out:
        ev = o.event
        assert set(ev) == {"obs_id", "event_id", "pointing", "simulation", "tels"}
        assert ev["simulation"]["shower_primary_id"] in (0, 101)
        assert ev["tels"], "every event has at least one triggered telescope"
        for tid, tel in ev["tels"].items():
            n_pix = len(ctx["tels"][tid]["camera"]["pix_x"])
            assert tel["waveform"].shape == (1, n_pix, 40) and tel["waveform"].dtype == np.float32
            assert tel["true_image"].dtype == np.int32
            # the whole waveform integrates to the true charge plus zero-mean noise
            assert abs(tel["waveform"].sum() - tel["true_image"].sum()) < 5 * 0.3 * np.sqrt(n_pix * 40)


def test_deterministic_per_seed_and_index():
    a = events(n_events=4, seed=7, camera="mixed")
    b = ToyEventSource(n_events=4, seed=7, camera="mixed")
    b.setup()
    again = b.make_event(2)  # redelivery of one event alone gives the same event
    np.testing.assert_equal(again["simulation"], a[2]["simulation"])
    for tid in a[2]["tels"]:
        np.testing.assert_array_equal(again["tels"][tid]["waveform"], a[2]["tels"][tid]["waveform"])
    c = events(n_events=4, seed=8, camera="mixed")
    assert a[0]["simulation"] != c[0]["simulation"]


def test_light_mode_and_unlimited():
    src = ToyEventSource(n_events=0, seed=1, with_waveforms=False, camera="square")
    assert src.total() is None
    first = [k.event for k in itertools.islice(src.process(), 30)]
    assert len(first) == 30
    tel = next(iter(first[0]["tels"].values()))
    assert "waveform" not in tel and tel["image"].dtype == np.float32 and tel["peak_time"].shape == (1600,)


def test_gamma_fraction():
    evs = events(n_events=200, seed=2, gamma_fraction=0.25, with_waveforms=False)
    n_gamma = sum(e["simulation"]["shower_primary_id"] == 0 for e in evs)
    assert 30 < n_gamma < 70


@pytest.mark.parametrize("cam", [hex_camera(), square_camera()])
def test_neighbors_equal_ctapipe(cam):
    from ctapipe.instrument import CameraGeometry

    geom = CameraGeometry(cam["name"], pix_id=np.arange(len(cam["pix_x"])),
                          pix_x=cam["pix_x"] * u.m, pix_y=cam["pix_y"] * u.m,
                          pix_area=cam["pix_area"] * u.m**2, pix_type=cam["pix_type"])
    assert neighbor_lists(cam["neighbors_indptr"], cam["neighbors_indices"]) == geom.neighbors


@pytest.mark.parametrize("with_waveforms", [True, False])
def test_rendering_in_a_stager_gives_the_same_events(with_waveforms):
    """render=false + ToyRenderer (through the codec, as in a worker) == rendering in the source."""
    from flow.testing import run_stager
    from stages.io.toy import ToyRenderer

    params = dict(n_events=6, seed=5, camera="mixed", with_waveforms=with_waveforms)
    whole = events(**params)
    drawn_src = ToyEventSource(render=False, **params)
    drawn = [k.event for k in drawn_src.process()]
    for ev in drawn:
        assert ev["toy_seed"] == [5, ev["event_id"] - 1]
        assert all(set(t) == {"toy_ellipse"} for t in ev["tels"].values())
    out = run_stager(ToyRenderer, drawn, context=drawn_src.publish_context(),
                     with_waveforms=with_waveforms)
    assert len(out) == len(whole)
    for (_, _, got), ref in zip(out, whole, strict=True):
        assert set(got) == set(ref) and got["simulation"] == ref["simulation"]
        assert sorted(got["tels"]) == sorted(ref["tels"])
        for tid, tel in ref["tels"].items():
            assert set(got["tels"][tid]) == set(tel)
            for key, value in tel.items():
                np.testing.assert_array_equal(got["tels"][tid][key], value)


def test_drawing_is_cheap_and_the_renderer_refuses_other_events():
    import time

    from stages.io.toy import ToyRenderer

    src = ToyEventSource(n_events=200, seed=1, camera="mixed", render=False)
    t0 = time.perf_counter()
    drawn = [k.event for k in src.process()]
    draw_s = time.perf_counter() - t0
    ctx = src.publish_context()
    renderer = ToyRenderer(context=ctx)
    t0 = time.perf_counter()
    for ev in drawn:
        renderer.process(ev)
    assert draw_s < (time.perf_counter() - t0) / 2, "drawing must stay the cheap part"
    with pytest.raises(ValueError, match="1:1 has no toy_seed"):
        renderer.process(events(n_events=1, seed=1, camera="mixed")[0])
