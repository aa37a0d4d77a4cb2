"""DL1Writer / DL2Writer: ctapipe layout read back with PyTables and ctapipe, resume, dedupe.

The comparison with ctapipe-process on real files is in tests/test_stages_ctapipe_tools.py.
"""

import copy
import subprocess
import sys
import textwrap
from pathlib import Path

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
        assert h5.get_node("/configuration/flow/keys").nrows == len(events)
        prov = h5.get_node("/configuration/flow/provenance").read()
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
    energy = read_table(path, "/dl2/event/subarray/energy/ToyEnergyEstimate")
    np.testing.assert_allclose(energy["ToyEnergyEstimate_energy"].quantity.to_value("TeV"), 1.5)
    cls = read_table(path, "/dl2/event/subarray/particle_type/ToyGammaSelection")
    np.testing.assert_allclose(cls["ToyGammaSelection_prediction"], 0.7)
    with tables.open_file(path) as h5:
        assert "/dl1/event/telescope/parameters" in h5  # DL2 files also carry the parameters
        # the placeholder formulas are labelled as toy estimates in the file
        assert "toy estimate" in h5.get_node("/dl2/event/subarray/energy/ToyEnergyEstimate"
                                             )._v_attrs["FLOW_ESTIMATE"]
        notes = h5.get_node("/configuration/flow/provenance").col("notes")[0].decode()
        assert "ToyGammaSelection" in notes and "ToyEnergyEstimate" in notes


def test_resume_and_duplicates(tmp_path, toy):
    ctx, events = toy
    path = tmp_path / "resume.h5"
    assert run_writer(DL1Writer, path, ctx, events[:8]) == []
    held = run_writer(DL1Writer, path, ctx, events, mode="append")
    assert sorted(held) == sorted(k for k, _ in events[:8])
    # a third run re-delivers everything: nothing is written twice
    run_writer(DL1Writer, path, ctx, events + events[:3], mode="append")
    with tables.open_file(path) as h5:
        keys = [k.decode() for k in h5.get_node("/configuration/flow/keys").col("key")]
        assert sorted(keys) == sorted(k for k, _ in events)
        assert h5.get_node("/simulation/event/subarray/shower").nrows == len(events)
        assert h5.get_node("/configuration/flow/provenance").nrows == 3
        assert h5.get_node("/configuration/simulation/run").nrows == 1


def test_service_statistics_add_up_over_a_resumed_run(tmp_path, toy):
    """The quality counts of every event once: a resumed run adds to the file's, duplicates skip."""
    from ctapipe.io import read_table

    from stages.quality import IMAGE_QUERY, QualityCuts, image_criteria, query_counts

    ctx, events = copy.deepcopy(toy)  # the module's toy events stay without counts
    cuts = QualityCuts(min_intensity=100.0)
    for _, ev in events:
        cuts.process(ev)
        checked = [image_criteria(t["image"], t["mask"]) for t in ev["tels"].values()]
        ev["quality_counts"]["image"] = query_counts(IMAGE_QUERY, checked)
    path = tmp_path / "stats.h5"
    run_writer(DL2Writer, path, ctx, events[:8])
    run_writer(DL2Writer, path, ctx, events + events[:3], mode="append")
    tels = [t for _, ev in events for t in ev["tels"].values()]
    intensity = np.array([t["params"]["hillas_intensity"] for t in tels])
    stereo = read_table(path, "/dl2/service/tel_event_statistics/HillasReconstructor")
    assert list(stereo["criteria"]) == ["TOTAL", "> 100 phe", "Positive width", "> 3 pixels"]
    assert list(stereo["func"])[1] == "parameters.hillas.intensity > 100"
    # the toy parameters have no width: every image fails "Positive width"
    assert list(stereo["counts"]) == [len(tels), int((intensity > 100).sum()), 0, len(tels)]
    assert list(stereo["cumulative_counts"]) == [len(tels), int((intensity > 100).sum()), 0, 0]
    image = read_table(path, "/dl1/service/image_statistics")
    n_masked = np.array([t["mask"].sum() for t in tels])
    assert list(image["criteria"]) == ["TOTAL", "size_greater_0", "at_least_2_pixels"]
    assert list(image["counts"]) == [len(tels), int((n_masked > 0).sum()), int((n_masked > 1).sum())]


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


def test_toy_run_configuration_is_what_ctapipe_weights_with(tmp_path, toy):
    from ctapipe.io import TableLoader

    ctx, events = toy
    path = tmp_path / "sim.h5"
    run_writer(DL2Writer, path, ctx, events)
    thrown = sum(ev["simulation"]["n_thrown"] for _, ev in events)
    assert thrown >= len(events)
    with TableLoader(path) as loader:
        run = loader.read_simulation_configuration()
        dist = loader.read_shower_distribution()
        assert run["n_showers"][0] == thrown and run["spectral_index"][0] == -2.0
        assert run["max_scatter_range"].quantity[0].to_value("m") == 400.0
        assert dist["n_entries"][0] == thrown
        assert dist["histogram"][0].sum() == pytest.approx(thrown, rel=1e-4)
        events_read = loader.read_subarray_events(simulated=True, observation_info=True)
        assert len(events_read) == len(events)
        assert len(loader.subarray) == len(ctx["subarray"]["tels"])


def test_writers_need_no_ctapipe(tmp_path):
    """The writers run with ctapipe made unimportable; ctapipe then reads what they wrote."""
    path = tmp_path / "no_ctapipe.h5"
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "ctapipe" or name.startswith("ctapipe."):
                    raise ImportError("ctapipe blocked for this test")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_stages_hdf5 import toy_events, run_writer
        from stages.io.hdf5 import DL2Writer
        ctx, events = toy_events(5)
        run_writer(DL2Writer, {str(path)!r}, ctx, events)
        assert not any(m.startswith("ctapipe") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from ctapipe.io import TableLoader

    with TableLoader(path) as loader:
        table = loader.read_telescope_events(dl1_parameters=True, dl2=True, simulated=True)
        assert len(table) > 0 and "HillasReconstructor_alt" in table.colnames


def test_tables_of_one_kind_share_their_description_and_keep_their_own_rows(tmp_path):
    from stages.io.ctapipe_layout import description, write_table
    from stages.io.ctapipe_schema import table_dtype
    kind = "dl1/event/telescope/parameters/tel_NNN"
    dtype = table_dtype(kind)
    assert description(dtype) is description(np.dtype(dtype.descr))
    with tables.open_file(tmp_path / "t.h5", "w") as h5:
        rows = np.zeros(3, dtype)
        rows["tel_id"] = 1
        write_table(h5, "/p/tel_001", kind, rows)
        write_table(h5, "/p/tel_002", kind, rows[:1])
        h5.get_node("/p/tel_002").append(rows[:2])
    with tables.open_file(tmp_path / "t.h5") as h5:
        one, two = h5.get_node("/p/tel_001"), h5.get_node("/p/tel_002")
        assert len(one) == 3 and len(two) == 3 and one.dtype == two.dtype == dtype
        assert one.attrs._f_list("user") == two.attrs._f_list("user")


def test_stacked_rows_equal_their_concatenation():
    from stages.io.hdf5 import stack_rows
    one = np.zeros(1, [("a", "f8"), ("b", "i4", (3,))])
    rows = [one.copy() for _ in range(5)]
    for i, row in enumerate(rows):
        row["a"], row["b"] = i, [i, -i, 2 * i]
    for block in (rows, rows[:1]):
        assert stack_rows(block).tobytes() == np.concatenate(block).tobytes()
        assert stack_rows(block).dtype == one.dtype
    other = [np.zeros(1, [("a", "f8"), ("c", "f4")])]   # mixed dtypes: NumPy's concatenation
    with pytest.raises(TypeError):
        stack_rows(rows + other)


def test_rows_are_writable_copies_of_the_default_row_of_every_kind():
    import json

    from stages.io.ctapipe_layout import default_row, rows
    from stages.io.ctapipe_schema import SCHEMA_FILE
    for kind in json.loads(SCHEMA_FILE.read_text()):
        for n in (0, 1, 3):
            out = rows(kind, n, "Algo")
            expected = np.repeat(default_row(kind, "Algo", ()), n)
            assert out.dtype == expected.dtype and out.tobytes() == expected.tobytes(), kind
            assert out.flags.writeable and len(out) == n
        one, two = rows(kind, 1, "Algo"), rows(kind, 1, "Algo")
        assert not np.shares_memory(one, two)


@pytest.mark.parametrize("name", ["CLASS", "NROWS", "FIELD_0_NAME", "FIELD_", "CTAFIELD_0_UNIT",
                                  "class", "XFIELD_1", ""])
def test_system_attribute_names_are_pytables(name):
    from stages.io.ctapipe_layout import _system_name
    assert _system_name(name) == tables.attributeset.issysattrname(name)


def test_set_attrs_writes_what_pytables_own_setitem_writes(tmp_path):
    from stages.io.ctapipe_layout import set_attrs
    from stages.io.ctapipe_schema import enum_pickle
    values = {"CTAFIELD_0_UNIT": "deg", "CTAFIELD_1_DESC": "", "N": 3, "X": 2.5, "FLAG": True,
              "B": b"raw", "WIDTH": np.int64(7), "ARR": np.arange(3.0), "LIST": [1, "a"],
              "ENUM": enum_pickle("ctapipe.containers:EventType"), "FIELD_0_FILL": 0}
    with tables.open_file(tmp_path / "a.h5", "w") as h5:
        mine = h5.create_table("/", "mine", np.dtype([("x", "f8")]))
        theirs = h5.create_table("/", "theirs", np.dtype([("x", "f8")]))
        set_attrs(mine, values)
        for name, value in values.items():
            theirs._v_attrs[name] = value
        for node in (mine, theirs):   # the open file's view: names and values
            assert node._v_attrs._v_attrnamesuser == theirs._v_attrs._v_attrnamesuser
            assert node._v_attrs._v_attrnamessys == theirs._v_attrs._v_attrnamessys
    with tables.open_file(tmp_path / "a.h5") as h5:   # and what is on disk
        mine, theirs = h5.get_node("/mine")._v_attrs, h5.get_node("/theirs")._v_attrs
        assert mine._f_list("all") == theirs._f_list("all")
        for name in theirs._f_list("all"):
            a, b = mine[name], theirs[name]
            assert type(a) is type(b) and np.array_equal(np.asarray(a), np.asarray(b)), name


@pytest.mark.parametrize("lon,lat,height", [(-70.3166, -24.6833, 2150.0), (-17.89, 28.76, 2200.0),
                                            (0.0, 0.0, 0.0), (179.9, -89.0, 5000.0)])
def test_reference_itrs_is_astropys_geocentric_position(lon, lat, height):
    import astropy.units as u
    from astropy.coordinates import EarthLocation

    from stages.io.ctapipe_layout import reference_itrs
    loc = EarthLocation.from_geodetic(lon=lon * u.deg, lat=lat * u.deg, height=height * u.m)
    expected = [c.to_value(u.m) for c in (loc.x, loc.y, loc.z)]
    assert np.allclose(reference_itrs({"lon_deg": lon, "lat_deg": lat, "height_m": height}),
                       expected, rtol=0, atol=1e-6)


def test_impact_distances_and_telescope_masks_equal_numpys_own():
    from stages.io.ctapipe_layout import axis_distances, tel_mask
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        pos = rng.normal(0, 300, (n, 3))
        cx, cy = rng.normal(0, 200, 2)
        alt, az = rng.uniform(0.5, 1.57), rng.uniform(-3, 3)
        direction = np.array([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)])
        expected = np.linalg.norm(np.cross(pos - np.array([cx, cy, 0.0]), direction), axis=-1)
        assert np.array_equal(axis_distances(pos, cx, cy, alt, az), expected)   # bit for bit
        ids = sorted(rng.choice(200, int(rng.integers(1, 100)), replace=False).tolist())
        chosen = rng.choice(ids, int(rng.integers(0, len(ids) + 1)), replace=False).tolist()
        assert np.array_equal(tel_mask(chosen + [999], ids),
                              np.isin(np.asarray(ids), np.asarray(chosen + [999], np.int64)))
