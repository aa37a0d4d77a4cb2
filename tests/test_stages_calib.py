"""stages.calib against ctapipe's CameraCalibrator on real simtel files (ctapipe is the reference).

Also holds `context_from_subarray` and `read_events`, shared by the other test_stages_* modules:
they build the flow context from a ctapipe SubarrayDescription without stages.io.
"""

import copy
from functools import cache

import numpy as np
import pytest
from astropy.utils import iers

iers.conf.auto_download = False
iers.conf.auto_max_age = None

ctapipe_io = pytest.importorskip("ctapipe.io")

from conftest import GAMMA_TEST, SST1M  # noqa: E402

from stages.calib import (  # noqa: E402
    ChargeExtraction,
    calibrate_r0,
    integration_correction,
)

FILES = {"prod3": GAMMA_TEST, "sst1m": SST1M}


def data_path(name: str) -> str:
    """The file through `stages.datasets` (downloaded into the user cache when missing)."""
    from stages.datasets import find_dataset

    return str(find_dataset(name))


def camera_entry(camera) -> dict:
    geom = camera.geometry
    neighbors = geom.neighbor_matrix_sparse
    return {
        "name": camera.name,
        "pix_x": geom.pix_x.to_value("m"), "pix_y": geom.pix_y.to_value("m"),
        "pix_area": geom.pix_area.to_value("m2"),
        "pix_type": geom.pix_type.value,
        "pix_rotation_deg": float(geom.pix_rotation.deg),
        "cam_rotation_deg": float(geom.cam_rotation.deg),
        "neighbors_indptr": neighbors.indptr.astype(np.int32),
        "neighbors_indices": neighbors.indices.astype(np.int32),
    }


def context_from_subarray(subarray) -> dict:
    """The flow context (docs/event-schema.md) of a ctapipe SubarrayDescription."""
    cameras = {cam.name: camera_entry(cam) for cam in subarray.camera_types}
    tels = {}
    for tel_id, tel in subarray.tel.items():
        readout = tel.camera.readout
        tels[tel_id] = {
            "position": subarray.positions[tel_id].to_value("m"),
            "optics": {"name": tel.optics.name,
                       "focal_length": tel.optics.equivalent_focal_length.to_value("m"),
                       "equivalent_focal_length": tel.optics.equivalent_focal_length.to_value("m"),
                       "effective_focal_length": tel.optics.effective_focal_length.to_value("m")},
            "camera": cameras[tel.camera.name],
            "n_gains": readout.n_channels, "n_samples": readout.n_samples,
            "sampling_rate_ghz": readout.sampling_rate.to_value("GHz"),
            "reference_pulse_shape": readout.reference_pulse_shape,
            "reference_pulse_sample_width_ns": readout.reference_pulse_sample_width.to_value("ns"),
        }
    loc = subarray.reference_location.geodetic
    return {"subarray": {"name": subarray.name, "tels": tels,
                         "reference_location": {"lon_deg": loc.lon.deg, "lat_deg": loc.lat.deg,
                                                "height_m": loc.height.to_value("m")}}}


def calibration_context(event) -> dict:
    """context["calibration"] from a ctapipe event's monitoring (tm_calib, disabled pixels)."""
    out = {}
    for tel_id in event.r1.tel:
        coeff = event.monitoring.tel[tel_id].camera.coefficients
        out[tel_id] = {"time_shift_ns": coeff.time_shift, "outlier_mask": coeff.outlier_mask}
    return out


@cache
def read_events(key: str, max_events: int):
    """(subarray, [ctapipe events calibrated by ctapipe-process's default CameraCalibrator])."""
    from ctapipe.calib import CameraCalibrator

    source = ctapipe_io.SimTelEventSource(data_path(FILES[key]), max_events=max_events,
                                          focal_length_choice="EQUIVALENT")
    calibrator = CameraCalibrator(source.subarray)
    events = []
    for event in source:
        calibrator(event)
        events.append(event)
    return source.subarray, events


@pytest.fixture(scope="module", params=list(FILES))
def dataset(request):
    return read_events(request.param, 8)


def flow_event(event) -> dict:
    return {"obs_id": event.index.obs_id, "event_id": event.index.event_id,
            "tels": {tid: {"waveform": r1.waveform,
                           "selected_gain_channel": r1.selected_gain_channel}
                     for tid, r1 in event.r1.tel.items()}}


def assert_close(ours, ref, rtol=1e-4, atol=1e-4, what=""):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, what
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=atol, err_msg=what)


def run_step(step_cls, subarray, event, **params):
    context = context_from_subarray(subarray)
    context["calibration"] = calibration_context(event)
    step = step_cls(context=context, **params)
    step.setup()
    return step.process(flow_event(event))


def test_neighbor_peak_window_sum_matches_ctapipe_process_default(dataset):
    subarray, events = dataset
    n_tels = 0
    for event in events:
        out = run_step(ChargeExtraction, subarray, event)
        for tel_id, dl1 in event.dl1.tel.items():
            ours = out["tels"][tel_id]
            assert "waveform" not in ours
            assert ours["image"].dtype == np.float32 and ours["peak_time"].dtype == np.float32
            assert_close(ours["image"], dl1.image, what=f"image tel {tel_id}")
            assert_close(ours["peak_time"], dl1.peak_time, what=f"peak_time tel {tel_id}")
            n_tels += 1
    assert n_tels >= 10


@pytest.mark.parametrize("key", list(FILES))
def test_local_peak_window_sum_matches_ctapipe(key):
    from ctapipe.calib import CameraCalibrator

    subarray, events = read_events(key, 8)
    calibrator = CameraCalibrator(subarray, image_extractor_type="LocalPeakWindowSum")
    for event in map(copy.deepcopy, events[:4]):  # the cached events are shared: copy
        out = run_step(ChargeExtraction, subarray, event, extractor="LocalPeakWindowSum",
                       drop_waveform=False)
        calibrator(event)  # overwrites dl1 with the local-peak result
        for tel_id, dl1 in event.dl1.tel.items():
            assert_close(out["tels"][tel_id]["image"], dl1.image)
            assert_close(out["tels"][tel_id]["peak_time"], dl1.peak_time)
            assert "waveform" in out["tels"][tel_id]


def test_integration_correction_matches_ctapipe(dataset):
    from ctapipe.image.extractor import integration_correction as ref

    subarray, _ = dataset
    for cam in subarray.camera_types:
        r = cam.readout
        args = (r.reference_pulse_shape, r.reference_pulse_sample_width.to_value("ns"),
                (1 / r.sampling_rate).to_value("ns"))
        for width, shift in [(7, 3), (5, 2), (3, 0)]:
            assert_close(integration_correction(*args, width, shift), ref(*args, width, shift),
                         rtol=1e-12, atol=0)


def test_r0_calibration_and_threshold_gain_selection_match_ctapipe():
    from ctapipe.calib.camera.gainselection import ThresholdGainSelector
    from ctapipe.io.simteleventsource import apply_simtel_r1_calibration

    rng = np.random.default_rng(1)
    r0 = rng.integers(200, 5000, size=(2, 50, 20)).astype(np.uint16)
    r0[0, :25] = np.minimum(r0[0, :25], 3999)  # half the pixels stay in high gain
    pedestal = rng.uniform(250, 300, size=(2, 50)).astype(np.float32)
    dc_to_pe = rng.uniform(0.01, 0.05, size=(2, 50)).astype(np.float32)
    ours, ours_gain = calibrate_r0(r0, pedestal, dc_to_pe, 4000.0)
    ref, ref_gain = apply_simtel_r1_calibration(r0, pedestal, dc_to_pe,
                                                ThresholdGainSelector(threshold=4000.0))
    np.testing.assert_array_equal(ours_gain, ref_gain)
    assert ours.shape == ref.shape == (1, 50, 20)
    assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert 0 < ours_gain.sum() < 50


def test_r0_input_runs_through_the_step(dataset):
    """Integer waveforms are R0: calibrated with the context pedestal and dc_to_pe first."""
    subarray, events = dataset
    event = events[0]
    tel_id = next(iter(event.r1.tel))
    n_pix = event.r1.tel[tel_id].waveform.shape[1]
    context = context_from_subarray(subarray)
    context["calibration"] = {tel_id: {"pedestal_per_sample": np.zeros((1, n_pix)),
                                       "dc_to_pe": np.ones((1, n_pix))}}
    step = ChargeExtraction(context=context, apply_time_shift=False)
    step.setup()
    r0 = np.clip(np.rint(event.r1.tel[tel_id].waveform * 10), 0, None).astype(np.uint16)
    out = step.process({"tels": {tel_id: {"waveform": r0}}})["tels"][tel_id]
    assert out["image"].shape == (n_pix,)
    assert np.isfinite(out["image"]).all()
    np.testing.assert_array_equal(out["selected_gain_channel"], 0)


def test_broken_pixels_are_interpolated_like_ctapipe(dataset):
    from ctapipe.calib import CameraCalibrator

    subarray, events = dataset
    event = copy.deepcopy(events[0])
    for tel_id, r1 in event.r1.tel.items():
        mask = np.zeros((1, r1.waveform.shape[1]), dtype=bool)
        mask[0, ::97] = True
        event.monitoring.tel[tel_id].camera.coefficients.outlier_mask = mask
    CameraCalibrator(subarray)(event)
    out = run_step(ChargeExtraction, subarray, event)
    for tel_id, dl1 in event.dl1.tel.items():
        assert_close(out["tels"][tel_id]["image"], dl1.image)
        assert_close(out["tels"][tel_id]["peak_time"], dl1.peak_time)
