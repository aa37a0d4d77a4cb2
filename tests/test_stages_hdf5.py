"""DL1Writer / DL2Writer: ctapipe layout read back with PyTables and ctapipe, resume, dedupe."""

import numpy as np
import pytest
import tables

from stages.io.hdf5 import DL1Writer, DL2Writer, read_context
from stages.io.toy import ToyEventSource


def toy_events(n, seed=1):
    src = ToyEventSource(n_events=n, seed=seed, with_waveforms=False, camera="mixed")
    ctx = src.publish_context()
    out = []
    for k in src.process():
        ev = k.event
        for tid, tel in ev["tels"].items():
            tel["mask"] = tel["image"] > 5
            tel["params"] = {"hillas_intensity": float(tel["image"].sum()),
                             "hillas_fov_lon": 0.1 * tid, "hillas_psi": 12.5,
                             "leakage_pixels_width_1": np.int64(2), "morphology_n_pixels": 7}
        ev["dl2"] = {"alt": 70.1, "az": 0.2, "core_x": 10.0, "core_y": -3.0, "h_max": 9000.0,
                     "is_valid": True, "multiplicity": len(ev["tels"]),
                     "telescopes": np.array(sorted(ev["tels"])), "energy": 1.5, "gammaness": 0.7}
        out.append((k.key, ev))
    return ctx, out


def run_writer(cls, path, ctx, events, **params):
    w = cls(path=str(path), context=ctx, **params)
    held = w.done_keys()
    w.setup()
    for key, ev in events:
        w.key = key
        w.process(ev)
    w.teardown()
    return held


@pytest.fixture(scope="module")
def toy():
    return toy_events(20)


def test_dl1_layout_units_and_ctapipe_read(tmp_path, toy):
    from ctapipe.io import read_table

    ctx, events = toy
    path = tmp_path / "dl1.h5"
    run_writer(DL1Writer, path, ctx, events, write_images=True, buffer_rows=7)
    n_tel_events = {}
    for _, ev in events:
        for tid in ev["tels"]:
            n_tel_events[tid] = n_tel_events.get(tid, 0) + 1
    with tables.open_file(path) as h5:
        for tid, n in n_tel_events.items():
            table = h5.get_node(f"/dl1/event/telescope/parameters/tel_{tid:03d}")
            assert table.nrows == n
            assert table.filters.complevel == 5
            images = h5.get_node(f"/dl1/event/telescope/images/tel_{tid:03d}")
            assert images.nrows == n and images.col("image").dtype == np.float32
        assert h5.get_node("/simulation/event/subarray/shower").nrows == len(events)
        assert h5.get_node("/flow/keys").nrows == len(events)
        prov = h5.get_node("/configuration/provenance/runs").read()
        assert prov["n_events"][0] == len(events) and b"numpy" in prov["versions"][0]
        ctx_back = read_context(h5.get_node("/configuration/flow/context"))
    tid = sorted(n_tel_events)[0]
    params = read_table(path, f"/dl1/event/telescope/parameters/tel_{tid:03d}")
    assert params["hillas_fov_lon"].unit == "deg" and params["hillas_psi"].unit == "deg"
    np.testing.assert_allclose(params["hillas_fov_lon"].value, 0.1 * tid)
    first = next(ev for _, ev in events if tid in ev["tels"])
    assert params["event_id"][0] == first["event_id"]
    assert params["hillas_intensity"][0] == pytest.approx(first["tels"][tid]["image"].sum())
    shower = read_table(path, "/simulation/event/subarray/shower")
    assert shower["true_energy"].unit == "TeV" and shower["true_alt"].unit == "deg"
    np.testing.assert_allclose(shower["true_alt"].quantity.to_value("rad"),
                               [ev["simulation"]["alt"] for _, ev in events])
    # the stored context is the published one
    for t, tel in ctx["subarray"]["tels"].items():
        np.testing.assert_array_equal(ctx_back["subarray"]["tels"][t]["camera"]["pix_x"],
                                      tel["camera"]["pix_x"])
        assert ctx_back["subarray"]["tels"][t]["optics"] == tel["optics"]


def test_dl2_layout(tmp_path, toy):
    from ctapipe.io import read_table

    ctx, events = toy
    path = tmp_path / "dl2.h5"
    run_writer(DL2Writer, path, ctx, events)
    geom = read_table(path, "/dl2/event/subarray/geometry/HillasReconstructor")
    assert len(geom) == len(events)
    assert geom["HillasReconstructor_alt"].unit == "deg"
    assert geom["HillasReconstructor_core_x"].unit == "m"
    assert geom["HillasReconstructor_telescopes"].shape == (len(events), len(ctx["subarray"]["tels"]))
    energy = read_table(path, "/dl2/event/subarray/energy/FlowEnergyRegressor")
    np.testing.assert_allclose(energy["FlowEnergyRegressor_energy"].quantity.to_value("TeV"), 1.5)
    cls = read_table(path, "/dl2/event/subarray/classification/FlowClassifier")
    np.testing.assert_allclose(cls["FlowClassifier_prediction"], 0.7)
    with tables.open_file(path) as h5:
        assert "/dl1/event/telescope/parameters" in h5  # DL2 files also carry the parameters


def test_resume_and_duplicates(tmp_path, toy):
    ctx, events = toy
    path = tmp_path / "resume.h5"
    assert run_writer(DL1Writer, path, ctx, events[:8]) == []
    held = run_writer(DL1Writer, path, ctx, events, mode="append")
    assert sorted(held) == sorted(k for k, _ in events[:8])
    # a third run re-delivers everything: nothing is written twice
    run_writer(DL1Writer, path, ctx, events + events[:3], mode="append")
    with tables.open_file(path) as h5:
        keys = [k.decode() for k in h5.get_node("/flow/keys").col("key")]
        assert sorted(keys) == sorted(k for k, _ in events)
        assert h5.get_node("/simulation/event/subarray/shower").nrows == len(events)
        assert h5.get_node("/configuration/provenance/runs").nrows == 3


def test_file_valid_after_early_teardown(tmp_path, toy):
    ctx, events = toy
    path = tmp_path / "early.h5"
    w = DL1Writer(path=str(path), context=ctx)
    w.setup()
    for key, ev in events[:3]:
        w.key = key
        w.process(ev)
    w.teardown()
    w.teardown()  # idempotent
    with tables.open_file(path) as h5:
        assert h5.get_node("/simulation/event/subarray/shower").nrows == 3
