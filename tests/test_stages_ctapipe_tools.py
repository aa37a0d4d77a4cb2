"""ctapipe's own readers and command-line tools on flow's files (real subprocesses, no skip).

flow's DL2 of the SST-1M file is compared node by node with ctapipe-process's output of the same
file (tables, columns, dtypes, units, values where the physics is the same: every column but the
timing ones, true-image parameters, core_psi and the service statistics included); TableLoader
(whose telescope events, true-image parameters included, are those of ctapipe's file),
HDF5EventSource (the same events and values as from ctapipe's file), ctapipe-process (re-running
the reconstruction on flow's file),
ctapipe-fileinfo, ctapipe-merge, the train tools, ctapipe-apply-models,
ctapipe-optimize-event-selection and ctapipe-compute-irf then run on flow's files.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tables

from stages.datasets import find_dataset

ROOT = Path(__file__).resolve().parents[1]
SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
CFG = ROOT / "configs" / "ctapipe"
BIN = Path(sys.executable).parent
# columns where flow's calibration differs from ctapipe's in a few pixels' peak times (timing,
# peak_time_*); every other column is compared (NaN where ctapipe leaves NaN, e.g. most _uncert)
NOT_COMPARED = re.compile(r"^(timing_.*|peak_time_(skewness|kurtosis))$")
# the direction uncertainty is the mean arccos of the plane crossings' cosines with the result: for
# two telescopes it is 0 up to arccos(1 - rounding) ~ 1e-6 deg, on either side
ATOL = {"HillasReconstructor_alt_uncert": 1e-5, "HillasReconstructor_az_uncert": 1e-5}


def run(*args, cwd=None):
    """A ctapipe tool; its provenance log goes to ``cwd`` (the test's directory)."""
    cmd = [str(BIN / args[0]), *map(str, args[1:])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or WORK[0], timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def flow_run(config, out, *sets):
    cmd = [sys.executable, "-m", "flow.cli", "run", str(ROOT / "configs" / config), "--quiet",
           "--set", f"write.path={out}", "--dead-letter", str(out.with_suffix(".deadletter.jsonl")),
           *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


WORK: list = []


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    WORK[:] = [tmp_path_factory.mktemp("ctapipe_tools")]
    return WORK[0]


@pytest.fixture(scope="session")
def sst1m(work):
    """(flow DL2, ctapipe-process DL2) of the SST-1M file, same calibration and quality options."""
    flow = flow_run("simtel_dl2.yaml", work / "flow_sst1m.h5", f"read.path=dataset:{SST1M}",
                    "quality.min_intensity=50")
    ref = work / "ref_sst1m.h5"
    run("ctapipe-process", "--input", find_dataset(SST1M), "--output", ref, "--write-parameters",
        "--write-showers", "--no-progress", "--SimTelEventSource.focal_length_choice=EQUIVALENT")
    return flow, ref


@pytest.fixture(scope="session")
def toys(work):
    """flow DL2 of toy gammas, protons and electrons (one run each, distinct obs_id)."""
    out = {}
    for obs_id, (particle, n) in enumerate((("gamma", 200), ("proton", 200), ("electron", 60)), 1):
        out[particle] = flow_run("toy_particle_dl2.yaml", work / f"toy_{particle}.h5",
                                 f"read.particle={particle}", f"read.obs_id={obs_id}",
                                 f"read.seed={obs_id}", f"read.n_events={n}")
    return out


def kind(path):
    return re.sub(r"tel_\d+", "tel_N", path)


def test_every_ctapipe_table_is_written_alike(sst1m):
    flow, ref = sst1m
    with tables.open_file(ref) as r, tables.open_file(flow) as f:
        assert f.root._v_attrs["CTA PRODUCT DATA MODEL VERSION"] == "v7.1.0"
        for key in r.root._v_attrs._v_attrnamesuser:
            assert key in f.root._v_attrs, key
        compared = set()
        for node in r.walk_nodes("/", "Table"):
            path = node._v_pathname
            assert path in f, path
            mine = f.get_node(path)
            assert mine.dtype.names == node.dtype.names, path
            for col in node.dtype.names:
                assert mine.dtype[col].base == node.dtype[col].base, (path, col)
            for attr in node._v_attrs._v_attrnamesuser:
                if attr.startswith("CTAFIELD_") and not attr.endswith("_MAXLEN"):
                    assert str(mine._v_attrs[attr]) == str(node._v_attrs[attr]), (path, attr)
            a, b = node.read(), mine.read()
            assert len(a) == len(b), path
            for col in a.dtype.names:
                if NOT_COMPARED.match(col):
                    continue
                if a.dtype[col].kind == "f":
                    np.testing.assert_allclose(b[col], a[col], rtol=1e-4, atol=ATOL.get(col, 1e-6),
                                               err_msg=f"{path}:{col}")
                else:
                    np.testing.assert_array_equal(b[col], a[col], err_msg=f"{path}:{col}")
            compared.add(kind(path))
    assert {"/configuration/simulation/run", "/dl1/event/subarray/trigger",
            "/configuration/instrument/subarray/layout", "/simulation/service/shower_distribution",
            "/dl2/event/subarray/geometry/HillasReconstructor", "/dl1/service/image_statistics",
            "/dl2/service/tel_event_statistics/HillasReconstructor",
            "/simulation/event/telescope/parameters/tel_N"} <= compared


def test_table_loader_reads_everything(sst1m):
    from ctapipe.io import TableLoader

    flow, ref = sst1m
    options = dict(dl1_parameters=True, dl2=True, simulated=True, true_parameters=True,
                   observation_info=True, pointing=True, instrument=True)
    with TableLoader(ref) as loader:
        expected = loader.read_telescope_events(**options)
    with TableLoader(flow) as loader:
        assert len(loader.subarray) == 70
        events = loader.read_telescope_events(**options)
        for col in ("hillas_intensity", "HillasReconstructor_alt", "true_energy",
                    "telescope_pointing_altitude", "tel_description", "subarray_pointing_lat",
                    "HillasReconstructor_tel_impact_distance", "true_impact_distance",
                    "true_hillas_intensity", "true_morphology_n_pixels", "core_psi"):
            assert col in events.colnames, col
        assert events.colnames == expected.colnames
        events.sort(["obs_id", "event_id", "tel_id"])
        expected.sort(["obs_id", "event_id", "tel_id"])
        for col in ("true_hillas_intensity", "true_hillas_width", "true_leakage_intensity_width_2",
                    "true_intensity_std", "core_psi", "telescope_pointing_altitude"):
            assert events[col].unit == expected[col].unit, col
            np.testing.assert_allclose(np.asarray(events[col]), np.asarray(expected[col]),
                                       rtol=1e-4, err_msg=col)
        assert np.isfinite(np.asarray(events["core_psi"])).sum() > 20
        assert events["hillas_intensity"].unit is None or str(events["hillas_psi"].unit) == "deg"
        assert len(loader.read_simulation_configuration()) == 1
        assert loader.read_shower_distribution()["n_entries"][0] == 200


def test_fileinfo_and_merge(toys, work):
    info = run("ctapipe-fileinfo", toys["gamma"]).stdout
    assert "CTA PRODUCT DATA MODEL VERSION" in info or "v7.1.0" in info
    merged = work / "merged.h5"
    run("ctapipe-merge", toys["gamma"], toys["proton"], "--output", merged, "--overwrite")
    from ctapipe.io import read_table

    shower = read_table(merged, "/simulation/event/subarray/shower")
    assert set(shower["obs_id"]) == {1, 2}
    assert len(read_table(merged, "/configuration/simulation/run")) == 2


def test_train_apply_and_irf(sst1m, toys, work):
    flow, _ = sst1m
    energy, disp = work / "energy.pkl", work / "disp.pkl"
    run("ctapipe-train-energy-regressor", "--input", flow, "--output", energy,
        "--config", CFG / "train_energy.yaml", "--overwrite")
    run("ctapipe-train-disp-reconstructor", "--input", flow, "--output", disp,
        "--config", CFG / "train_disp.yaml", "--overwrite")
    applied = work / "sst1m_applied.h5"
    run("ctapipe-apply-models", "--input", flow, "--output", applied, "--reconstructor", energy,
        "--reconstructor", disp, "--overwrite")
    with tables.open_file(applied) as h5:
        assert "/dl2/event/subarray/energy/ExtraTreesRegressor" in h5
        assert "/dl2/event/subarray/geometry/disp" in h5
    toy_energy, classifier = work / "toy_energy.pkl", work / "classifier.pkl"
    run("ctapipe-train-energy-regressor", "--input", toys["gamma"], "--output", toy_energy,
        "--config", CFG / "train_energy.yaml", "--overwrite")
    run("ctapipe-train-particle-classifier", "--signal", toys["gamma"], "--background",
        toys["proton"], "--output", classifier, "--config", CFG / "train_classifier.yaml",
        "--overwrite")
    dl2 = {}
    for particle, path in toys.items():
        dl2[particle] = work / f"{particle}_applied.h5"
        run("ctapipe-apply-models", "--input", path, "--output", dl2[particle], "--reconstructor",
            toy_energy, "--reconstructor", classifier, "--overwrite")
    cuts, irf = work / "cuts.fits", work / "irf.fits"
    run("ctapipe-optimize-event-selection", "--gamma-file", dl2["gamma"], "--proton-file",
        dl2["proton"], "--electron-file", dl2["electron"], "--output", cuts,
        "--config", CFG / "irf.yaml", "--overwrite")
    run("ctapipe-compute-irf", "--cuts", cuts, "--gamma-file", dl2["gamma"], "--proton-file",
        dl2["proton"], "--electron-file", dl2["electron"], "--output", irf,
        "--config", CFG / "irf.yaml", "--overwrite")
    from astropy.io import fits

    with fits.open(irf) as hdus:
        names = {h.name for h in hdus}
        assert {"EFFECTIVE AREA", "ENERGY DISPERSION"} <= names, names
        assert np.nanmax(hdus["EFFECTIVE AREA"].data["EFFAREA"]) > 0


def read_with_hdf5_event_source(path) -> dict:
    """{event_id: (stereo values, {tel_id: telescope values})} through ctapipe's HDF5EventSource."""
    import warnings

    from astropy.utils import iers
    from ctapipe.io import HDF5EventSource

    iers.conf.auto_download = False
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with HDF5EventSource(path) as source:
            for event in source:
                geometry = event.dl2.stereo.geometry["HillasReconstructor"]
                stereo = [geometry.alt.to_value("deg"), geometry.alt_uncert.to_value("deg"),
                          geometry.h_max.to_value("m"), geometry.is_valid,
                          event.simulation.shower.energy.to_value("TeV"), event.trigger.time.unix]
                tels = {tel_id: [dl1.parameters.hillas.intensity,
                                 dl1.parameters.core.psi.to_value("deg"),
                                 event.simulation.tel[tel_id].true_parameters.hillas.intensity,
                                 event.simulation.tel[tel_id].true_parameters.leakage.pixels_width_1,
                                 event.monitoring.tel[tel_id].pointing.altitude.to_value("rad"),
                                 event.dl2.tel[tel_id].impact["HillasReconstructor"]
                                 .distance.to_value("m")]
                        for tel_id, dl1 in event.dl1.tel.items()}
                out[event.index.event_id] = (stereo, tels)
    return out


def test_hdf5_event_source_and_ctapipe_process_read_flow_dl2(sst1m, work):
    """flow's DL2 read as ctapipe's own: the same events and values; ctapipe-process re-runs on it."""
    flow, ref = sst1m
    ours, theirs = read_with_hdf5_event_source(flow), read_with_hdf5_event_source(ref)
    assert sorted(ours) == sorted(theirs) and len(theirs) == 31
    for event_id, (stereo, tels) in theirs.items():
        np.testing.assert_allclose(ours[event_id][0], stereo, rtol=1e-4, atol=1e-5,
                                   err_msg=str(event_id))
        assert ours[event_id][1].keys() == tels.keys()
        for tel_id, values in tels.items():
            np.testing.assert_allclose(ours[event_id][1][tel_id], values, rtol=1e-4,
                                       err_msg=f"{event_id} {tel_id}")
    again = work / "ctapipe_on_flow_dl2.h5"  # DL2 recomputed by ctapipe from flow's parameters
    run("ctapipe-process", "--input", flow, "--output", again, "--write-parameters",
        "--write-showers", "--no-progress", "--overwrite")
    from ctapipe.io import read_table

    path = "/dl2/service/tel_event_statistics/HillasReconstructor"
    for col in ("criteria", "counts", "cumulative_counts"):
        assert list(read_table(again, path)[col]) == list(read_table(ref, path)[col]), col
    geometry = "/dl2/event/subarray/geometry/HillasReconstructor"
    np.testing.assert_allclose(read_table(again, geometry)["HillasReconstructor_alt"],
                               read_table(ref, geometry)["HillasReconstructor_alt"], rtol=1e-4)
