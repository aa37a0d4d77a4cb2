"""SimtelSource against ctapipe's SimTelEventSource on the same files, and on broken files."""

import gzip
import warnings

import numpy as np
import pytest
from astropy.utils import iers
from conftest import GAMMA_TEST, SST1M

from flow.graph.step import Keyed
from stages.io.simtel import SimtelReadWarning, SimtelSource

iers.conf.auto_download = False

FILES = [GAMMA_TEST, SST1M]
N_EVENTS = 4


def ctapipe_source(path, **kw):
    from ctapipe.io import SimTelEventSource

    choice = "EFFECTIVE" if path.name == SST1M else "EQUIVALENT"  # gamma_test has no effective f
    return SimTelEventSource(path, focal_length_choice=choice, **kw)


@pytest.fixture(scope="module", params=FILES, ids=lambda name: name[:12])
def both(request, data_file):
    path = data_file(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = SimtelSource(path=str(path), max_events=N_EVENTS)
        context = ours.publish_context()
        events = [k.event for k in ours.process()]
        with ctapipe_source(path, max_events=N_EVENTS) as src:
            reference = [(e.index.event_id, e) for e in src]
            subarray = src.subarray
    return path, context["subarray"], events, subarray, reference


def test_subarray_matches_ctapipe(both):
    path, sub, _, ref, _ = both
    assert sorted(sub["tels"]) == sorted(ref.tel_ids)
    seen = set()
    for tel_id, tel in sub["tels"].items():
        desc = ref.tel[tel_id]
        np.testing.assert_allclose(tel["position"], ref.positions[tel_id].to_value("m"))
        geom = desc.camera.geometry
        np.testing.assert_allclose(tel["camera"]["pix_x"], geom.pix_x.to_value("m"), atol=1e-9)
        np.testing.assert_allclose(tel["camera"]["pix_y"], geom.pix_y.to_value("m"), atol=1e-9)
        np.testing.assert_allclose(tel["camera"]["pix_area"], geom.pix_area.to_value("m2"))
        assert tel["camera"]["pix_type"] == geom.pix_type.value
        assert tel["camera"]["pix_rotation_deg"] == pytest.approx(geom.pix_rotation.deg)
        assert tel["optics"]["equivalent_focal_length"] == pytest.approx(
            desc.optics.equivalent_focal_length.to_value("m"))
        assert tel["optics"]["focal_length"] == pytest.approx(geom.frame.focal_length.to_value("m"))
        readout = desc.camera.readout
        assert tel["n_samples"] == readout.n_samples
        assert tel["sampling_rate_ghz"] == pytest.approx(readout.sampling_rate.to_value("GHz"))
        np.testing.assert_array_equal(tel["reference_pulse_shape"], readout.reference_pulse_shape)
        assert tel["reference_pulse_sample_width_ns"] == pytest.approx(
            readout.reference_pulse_sample_width.to_value("ns"))
        if desc.camera.name not in seen and len(geom.pix_x) < 3000:
            seen.add(desc.camera.name)
            csr = geom.neighbor_matrix_sparse.tocsr()
            csr.sort_indices()
            np.testing.assert_array_equal(tel["camera"]["neighbors_indptr"], csr.indptr)
            np.testing.assert_array_equal(tel["camera"]["neighbors_indices"], csr.indices)
    assert sub["name"] == ref.name


def test_events_match_ctapipe(both):
    path, _, events, _, reference = both
    assert len(events) == len(reference) == N_EVENTS
    for ev, (event_id, ref) in zip(events, reference, strict=True):
        assert ev["event_id"] == event_id and ev["obs_id"] == ref.index.obs_id
        assert ev["pointing"]["alt"] == pytest.approx(ref.monitoring.pointing.array_altitude.to_value("rad"))
        sim = ref.simulation.shower
        assert ev["simulation"]["energy"] == pytest.approx(sim.energy.to_value("TeV"))
        assert ev["simulation"]["alt"] == pytest.approx(sim.alt.to_value("rad"))
        assert ev["simulation"]["core_x"] == pytest.approx(sim.core_x.to_value("m"))
        assert ev["simulation"]["x_max"] == pytest.approx(sim.x_max.to_value("g/cm2"))
        assert ev["simulation"]["shower_primary_id"] == sim.shower_primary_id
        assert sorted(ev["tels"]) == sorted(ref.r1.tel)
        for tel_id, tel in ev["tels"].items():
            r1 = ref.r1.tel[tel_id]
            assert tel["waveform"].dtype == np.float32
            assert tel["waveform"].shape == r1.waveform.shape
            np.testing.assert_allclose(tel["waveform"], r1.waveform, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(tel["selected_gain_channel"], r1.selected_gain_channel)
            true_image = ref.simulation.tel[tel_id].true_image if tel_id in ref.simulation.tel else None
            if true_image is None:
                assert "true_image" not in tel
            else:
                np.testing.assert_array_equal(tel["true_image"], true_image)
            pointing = ref.monitoring.tel[tel_id].pointing  # the telescope's tracking position
            assert tel["pointing"]["alt"] == pointing.altitude.to_value("rad")
            assert tel["pointing"]["az"] == pointing.azimuth.to_value("rad")


def test_keys_allowed_tels_and_max_events(data_file):
    path = data_file(FILES[-1])
    src = SimtelSource(path=str(path), max_events=3, allowed_tels=[1, 2, 3, 29, 55])
    assert sorted(src.publish_context()["subarray"]["tels"]) == [1, 2, 3, 29, 55]
    out = list(src.process())
    assert len(out) <= 3 and all(isinstance(o, Keyed) for o in out)
    for o in out:
        assert o.key == f"{o.event['obs_id']}:{o.event['event_id']}"
        assert set(o.event["tels"]) <= {1, 2, 3, 29, 55}


def read_all(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = [k.event["event_id"] for k in SimtelSource(path=str(path), **kw).process()]
    return events, [w for w in caught if issubclass(w.category, SimtelReadWarning)]


@pytest.fixture(scope="module")
def raw_events(data_file):
    """The decompressed prod3 file (a small, plain eventio stream) and its full event list."""
    path = data_file(GAMMA_TEST)
    raw = gzip.open(path).read()
    events, _ = read_all(path)
    return raw, events


def test_truncated_file_ends_with_warning(tmp_path, raw_events):
    from flow.errors import DataError

    raw, full = raw_events
    got_events = 0
    for fraction in (0.02, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99):
        cut = tmp_path / f"cut{fraction}.simtel"
        cut.write_bytes(raw[: int(len(raw) * fraction)])
        try:
            events, warned = read_all(cut)
        except DataError as exc:  # the run header itself is cut: refused before the run starts
            assert cut.name in str(exc) and "header" in str(exc)
            continue
        assert events == full[: len(events)]
        got_events += len(events)
        for w in warned:
            assert cut.name in str(w.message)
            assert f"after event {events[-1]}" in str(w.message) if events else True
    assert got_events > 0


def test_truncated_gzip_stream(tmp_path, data_file):
    data = data_file(GAMMA_TEST).read_bytes()
    cut = tmp_path / "cut.simtel.gz"
    cut.write_bytes(data[: len(data) // 2])
    events, warned = read_all(cut)
    assert len(events) >= 1
    assert all("cut.simtel.gz" in str(w.message) for w in warned)


def flipped_file(tmp_path, raw: bytes, seed: int):
    """``tmp_path/flipped.simtel``: ``raw`` with 20 bytes past its first tenth inverted (``seed``)."""
    rng = np.random.default_rng(seed)
    data = bytearray(raw)
    for pos in rng.integers(len(data) // 10, len(data), size=20):
        data[pos] ^= 0xFF
    bad = tmp_path / "flipped.simtel"
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bytes_never_crash_or_hang(tmp_path, raw_events, seed):
    raw, full = raw_events
    bad = flipped_file(tmp_path, raw, seed)
    from flow.errors import DataError

    try:
        events, warned = read_all(bad, read_timeout_s=60)
    except DataError as exc:  # a flipped byte in the run header: refused before the run
        assert "flipped.simtel" in str(exc)
        return
    assert len(events) <= len(full) + 5
    for w in warned:
        assert "flipped.simtel" in str(w.message) and "after event" in str(w.message)


def test_missing_file_is_a_data_error(tmp_path):
    from flow.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        SimtelSource(path=str(tmp_path / "nope.simtel.gz")).publish_context()


def test_calibration_context_matches_ctapipe_monitoring(both):
    path, _, _, _, reference = both
    context = SimtelSource(path=str(path)).publish_context()
    calib = context["calibration"]
    _, ref = reference[0]
    for tel_id in ref.r1.tel:
        coeff = ref.monitoring.tel[tel_id].camera.coefficients
        np.testing.assert_allclose(calib[tel_id]["time_shift_ns"], coeff.time_shift.to_value("ns")
                                   if hasattr(coeff.time_shift, "unit") else coeff.time_shift)
        np.testing.assert_array_equal(calib[tel_id]["outlier_mask"], coeff.outlier_mask)
