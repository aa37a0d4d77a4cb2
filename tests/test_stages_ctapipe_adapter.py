"""The ctapipe adapter gives what ctapipe itself gives on the same simtel events."""

import warnings

import numpy as np
import pytest
from astropy.utils import iers
from conftest import SST1M

from stages.ctapipe_adapter import (
    CallableStager,
    CtapipeCalibrator,
    CtapipeImageProcessor,
    CtapipeShowerProcessor,
    ctapipe_subarray,
)
from stages.io.simtel import SimtelSource
from stages.io.toy import ToyEventSource

iers.conf.auto_download = False
N = 15


@pytest.fixture(scope="module")
def runs(data_file):
    path = data_file(SST1M)
    from ctapipe.calib import CameraCalibrator
    from ctapipe.image import ImageProcessor
    from ctapipe.io import SimTelEventSource
    from ctapipe.reco import ShowerProcessor

    warnings.simplefilter("ignore")
    src = SimtelSource(path=str(path), max_events=N)
    ctx = src.publish_context()
    steps = [CtapipeCalibrator(context=ctx), CtapipeImageProcessor(context=ctx),
             CtapipeShowerProcessor(context=ctx)]
    for s in steps:
        s.setup()
    ours = []
    for k in src.process():
        ev = k.event
        for s in steps:
            ev = s.process(ev)
        ours.append(ev)
    ref = []
    with SimTelEventSource(path, max_events=N) as source:
        calib, improc = CameraCalibrator(source.subarray), ImageProcessor(source.subarray)
        shower = ShowerProcessor(source.subarray)
        for ev in source:
            calib(ev)
            improc(ev)
            shower(ev)
            ref.append(ev)
    return ctx, ours, ref


def test_images_equal(runs):
    _, ours, ref = runs
    assert len(ours) == len(ref) == N
    for ev, r in zip(ours, ref, strict=True):
        assert ev["event_id"] == r.index.event_id
        for tel_id, tel in ev["tels"].items():
            np.testing.assert_allclose(tel["image"], r.dl1.tel[tel_id].image, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(tel["peak_time"], r.dl1.tel[tel_id].peak_time, atol=1e-3)
            np.testing.assert_array_equal(tel["mask"], r.dl1.tel[tel_id].image_mask)
            assert "waveform" not in tel


def test_parameters_equal(runs):
    _, ours, ref = runs
    n_checked = 0
    for ev, r in zip(ours, ref, strict=True):
        for tel_id, tel in ev["tels"].items():
            p = r.dl1.tel[tel_id].parameters
            for name, value in (("hillas_intensity", p.hillas.intensity),
                                ("hillas_fov_lon", p.hillas.fov_lon.to_value("deg")),
                                ("hillas_psi", p.hillas.psi.to_value("deg")),
                                ("hillas_width", p.hillas.width.to_value("deg")),
                                ("leakage_intensity_width_2", p.leakage.intensity_width_2),
                                ("morphology_n_pixels", p.morphology.n_pixels)):
                np.testing.assert_allclose(tel["params"][name], value, rtol=1e-5, equal_nan=True)
            n_checked += 1
    assert n_checked > 10


def test_dl2_equal(runs):
    _, ours, ref = runs
    n_valid = 0
    for ev, r in zip(ours, ref, strict=True):
        geom = r.dl2.stereo.geometry["HillasReconstructor"]
        assert ev["dl2"]["is_valid"] == geom.is_valid
        if geom.is_valid:
            n_valid += 1
            assert ev["dl2"]["alt"] == pytest.approx(geom.alt.to_value("deg"), abs=1e-6)
            assert ev["dl2"]["az"] == pytest.approx(geom.az.to_value("deg"), abs=1e-6)
            assert ev["dl2"]["core_x"] == pytest.approx(geom.core_x.to_value("m"), abs=1e-4)
            assert ev["dl2"]["multiplicity"] == len(geom.telescopes)
    assert n_valid >= 1


def test_subarray_rebuilt_without_download(runs):
    ctx, _, _ = runs
    sub = ctapipe_subarray(ctx["subarray"])
    tel_id = next(iter(ctx["subarray"]["tels"]))
    geom = sub.tel[tel_id].camera.geometry
    np.testing.assert_array_equal(geom.pix_x.to_value("m"), ctx["subarray"]["tels"][tel_id]["camera"]["pix_x"])
    assert sub.tel[tel_id].camera.readout.n_samples == ctx["subarray"]["tels"][tel_id]["n_samples"]


def test_adapter_on_toy_events():
    src = ToyEventSource(n_events=3, seed=1, camera="mixed")
    ctx = src.publish_context()
    cal = CtapipeCalibrator(context=ctx)
    cal.setup()
    for k in src.process():
        ev = cal.process(k.event)
        for tel in ev["tels"].values():
            assert tel["image"].dtype == np.float32
            bright = tel["true_image"] > 20
            np.testing.assert_allclose(tel["image"][bright], tel["true_image"][bright],
                                       rtol=0.5, atol=5)


def test_callable_stager():
    ev = {"obs_id": 1, "event_id": 1, "tels": {1: {"image": np.array([1.0, 4.0])}}}
    step = CallableStager(func="numpy:sqrt", field_in="image", field_out="root")
    out = step.process(ev)
    np.testing.assert_array_equal(out["tels"][1]["root"], [1.0, 2.0])
    step = CallableStager(func="builtins:len", field_in="tels", field_out="n", per_telescope=False)
    assert step.process(ev)["n"] == 1
