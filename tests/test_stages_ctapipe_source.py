"""stages.io.ctapipe_source: ctapipe EventSources as flow producers, run by the real `flow run`.

- On a sim_telarray file, the adapter (SimTelEventSource) publishes the same context and yields
  the same events as flow's own SimtelSource.
- ACADA DL0 zfits: a subarray trigger file and an LST-1 event file are written here with protozfits
  in the ACADA-DPPS directory layout (as ctapipe_io_zfits's own tests make theirs, with a shower
  image in the waveforms); `flow run` reads them through ProtozfitsDL0EventSource (found by ctapipe
  through its entry points) and its images, masks and Hillas parameters are ctapipe's own.
- HDF5EventSource: a DL1 file written by ctapipe-process is read back by `flow run`, cleaned and
  parametrised again, and gives the file's own masks and parameters. flow's own DL1 file (images,
  parameters, true images and their parameters) is read by HDF5EventSource with the values flow
  wrote, and `flow run` re-processes it through HDF5EventSource to the same masks and parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
import tables

pytest.importorskip("ctapipe")

from astropy.utils import iers  # noqa: E402

iers.conf.auto_download = False

from flow.errors import DataError  # noqa: E402
from stages.datasets import find_dataset  # noqa: E402
from stages.io.ctapipe_source import CtapipeSource, available_sources  # noqa: E402
from stages.io.simtel import SimtelSource  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"
N_ZFITS = 12
OBS_ID, SB_ID = 456, 123


def flow_run(config: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "flow.cli", "run", str(config), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def dl1_graph(tmp_path: Path, read: str, output: Path, steps=("calibrate", "clean", "parameters")):
    """A YAML graph: CtapipeSource -> the given flow stages -> DL1Writer (images, parameters)."""
    uses = {"calibrate": "stages.calib:ChargeExtraction",
            "clean": "stages.cleaning:TailcutsCleaning",
            "parameters": "stages.image:ImageParameters"}
    names = [*steps, "write"]
    lines = ["name: ctapipe-source-test", "steps:", "  - name: read", "    kind: producer",
             "    use: stages.io.ctapipe_source:CtapipeSource", f"    with: {read}",
             f"    to: [{names[0]}]"]
    for step, nxt in zip(steps, names[1:], strict=True):
        lines += [f"  - name: {step}", "    kind: stager", f"    use: {uses[step]}",
                  f"    to: [{nxt}]"]
    lines += ["  - name: write", "    kind: consumer", "    use: stages.io.hdf5:DL1Writer",
              f"    with: {{path: '{output}', write_images: true, write_parameters: true}}"]
    config = tmp_path / "graph.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


def read_dl1(path: Path) -> dict:
    """{(event_id, tel_id): {"image", "mask", "params"}} of a DL1 file (flow's or ctapipe's)."""
    out = {}
    with tables.open_file(str(path)) as h5:
        params = {}
        for table in h5.root.dl1.event.telescope.parameters:
            for row in table.read():
                params[(int(row["event_id"]), int(row["tel_id"]))] = row
        for table in h5.root.dl1.event.telescope.images:
            for row in table.read():
                key = (int(row["event_id"]), int(row["tel_id"]))
                out[key] = {"image": row["image"], "mask": row["image_mask"],
                            "params": params[key]}
    return out


# --- sim_telarray: the adapter and SimtelSource agree ----------------------------------------

def test_adapter_equals_simtel_source_on_a_simtel_file():
    warnings.simplefilter("ignore")
    ours = SimtelSource(path=f"dataset:{SST1M}", max_events=4)
    adapter = CtapipeSource(path=f"dataset:{SST1M}", max_events=4)
    a, b = ours.publish_context()["subarray"], adapter.publish_context()["subarray"]
    assert adapter.publish_context()["provenance"]["reader"] == "SimTelEventSource"
    assert a["name"] == b["name"] and set(a["tels"]) == set(b["tels"])
    for tel_id, tel in a["tels"].items():
        other = b["tels"][tel_id]
        assert tel["optics"] == pytest.approx(other["optics"], nan_ok=True)
        for key in ("n_gains", "n_samples"):
            assert tel[key] == other[key]
        np.testing.assert_allclose(tel["position"], other["position"], rtol=1e-12)
        np.testing.assert_allclose(tel["reference_pulse_shape"], other["reference_pulse_shape"])
        for key, value in tel["camera"].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_allclose(value, other["camera"][key], rtol=1e-12, err_msg=key)
            else:
                assert value == pytest.approx(other["camera"][key]), key
    events_a = [k.event for k in ours.process()]
    events_b = [k.event for k in adapter.process()]
    assert [e["event_id"] for e in events_a] == [e["event_id"] for e in events_b]
    for ea, eb in zip(events_a, events_b, strict=True):
        assert ea["simulation"] == pytest.approx(eb["simulation"])
        assert ea["pointing"] == pytest.approx(eb["pointing"])
        assert set(ea["tels"]) == set(eb["tels"])
        for tel_id, ta in ea["tels"].items():
            tb = eb["tels"][tel_id]
            np.testing.assert_array_equal(ta["waveform"], tb["waveform"])
            np.testing.assert_array_equal(ta["selected_gain_channel"], tb["selected_gain_channel"])
            np.testing.assert_array_equal(ta["true_image"], tb["true_image"])
            assert ta["pointing"] == pytest.approx(tb["pointing"], rel=1e-12)
            calib = ours.publish_context()["calibration"][tel_id]
            np.testing.assert_array_equal(tb["calibration"]["time_shift_ns"],
                                          calib["time_shift_ns"])
            np.testing.assert_array_equal(tb["calibration"]["outlier_mask"],
                                          calib["outlier_mask"])


def test_plugins_are_found_through_entry_points():
    names = available_sources()
    for name in ("SimTelEventSource", "HDF5EventSource", "ProtozfitsDL0EventSource",
                 "LSTEventSource"):
        assert name in names


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CtapipeSource(path=str(tmp_path / "nope.h5")).publish_context()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an event file")
    with pytest.raises(DataError, match="junk.bin: no ctapipe EventSource can read it"):
        CtapipeSource(path=str(junk)).publish_context()
    with pytest.raises(DataError, match="unknown EventSource 'NoSuchSource'"):
        CtapipeSource(path=str(junk), source="NoSuchSource").publish_context()


# --- ACADA DL0 zfits, written here with protozfits -------------------------------------------

def shower_image(geometry, rng) -> np.ndarray:
    """A bright elliptical blob (p.e.) on LSTCam, plus noise: something to clean and fit."""
    x, y = geometry.pix_x.to_value("m"), geometry.pix_y.to_value("m")
    cx, cy, psi = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0, np.pi)
    along = (x - cx) * np.cos(psi) + (y - cy) * np.sin(psi)
    across = -(x - cx) * np.sin(psi) + (y - cy) * np.cos(psi)
    image = 400.0 * np.exp(-0.5 * ((along / 0.15) ** 2 + (across / 0.05) ** 2))
    return image + rng.normal(0.0, 1.0, len(x))


def write_acada_dl0(base: Path, n_events: int) -> Path:
    """ACADA DL0 (DL0v1 protobuf in zfits) for LST-1: returns the subarray trigger file."""
    import astropy.units as u
    from astropy.time import Time
    from ctapipe.containers import EventType
    from ctapipe_io_zfits.instrument import build_subarray_description
    from ctapipe_io_zfits.time import time_to_cta_high_res
    from protozfits import DL0v1_Subarray_pb2 as Subarray
    from protozfits import DL0v1_Telescope_pb2 as Telescope
    from protozfits import FlatProtobufZOFits
    from protozfits.anyarray import numpy_to_any_array

    geometry = build_subarray_description(1).tel[1].camera.geometry
    n_pixels, n_samples, scale, offset = geometry.n_pixels, 40, 80.0, 5.0
    start = Time("2025-02-04T20:45:31")
    stamp = f"{start.to_datetime(UTC):%Y%m%dT%H%M%S}"
    # <base>/DL0/<element>/<user>/acada-adh/<kind>/<YYYY>/<MM>/<DD>/ (ACADA-DPPS ICD); the evening
    # of 2025-02-04 on La Palma
    user, date = "ctao-acada-n", "2025/02/04"
    triggers = base / "DL0" / "ARRAY" / user / "acada-adh" / "triggers" / date
    events = base / "DL0" / "LSTN-01" / user / "acada-adh" / "events" / date
    for directory in (triggers, events):
        directory.mkdir(parents=True)
    ids = f"{stamp}_SBID{SB_ID:019d}_OBSID{OBS_ID:019d}"
    trigger_path = triggers / f"SUB001_SWAT001_{ids}_SUBARRAY_CHUNK000.fits.fz"
    event_path = events / f"TEL001_SDH000_{ids}_TEL_SHOWER_CHUNK000.fits.fz"
    options = {"n_tiles": 5, "rows_per_tile": 20, "compression_block_size_kb": 64 * 1024}
    rng = np.random.default_rng(1)
    pulse = np.exp(-0.5 * ((np.arange(n_samples) - 18.0) / 1.5) ** 2)
    pulse /= pulse.sum()
    with FlatProtobufZOFits(**options) as trig, FlatProtobufZOFits(**options) as tel:
        trig.open(str(trigger_path))
        trig.move_to_new_table("DataStream")
        trig.write_message(Subarray.DataStream(subarray_id=1, sb_id=SB_ID, obs_id=OBS_ID,
                                               producer_id=1, sb_creator_id=2))
        trig.move_to_new_table("SubarrayEvents")
        tel.open(str(event_path))
        tel.move_to_new_table("DataStream")
        tel.write_message(Telescope.DataStream(tel_id=1, sb_id=SB_ID, obs_id=OBS_ID,
                                               waveform_scale=scale, waveform_offset=offset,
                                               sb_creator_id=2))
        tel.move_to_new_table("CameraConfiguration")
        tel.write_message(Telescope.CameraConfiguration(
            tel_id=1, local_run_id=OBS_ID, config_time_s=start.unix, camera_config_id=1,
            num_pixels=n_pixels, pixel_id_map=numpy_to_any_array(np.arange(n_pixels)),
            module_id_map=numpy_to_any_array(np.arange(n_pixels // 7)), num_channels=2,
            num_samples_nominal=n_samples, num_samples_long=0, num_modules=n_pixels // 7,
            sampling_frequency=1024))
        tel.move_to_new_table("Events")
        for event_id in range(1, n_events + 1):
            seconds, quarter_ns = time_to_cta_high_res(start + event_id * 1e-3 * u.s)
            one = numpy_to_any_array(np.array([1]))
            trig.write_message(Subarray.Event(
                event_id=event_id, trigger_type=1, sb_id=SB_ID, obs_id=OBS_ID,
                event_time_s=int(seconds), event_time_qns=int(quarter_ns),
                trigger_ids=numpy_to_any_array(np.array([event_id])),
                tel_ids_with_trigger=one, tel_ids_with_data=one))
            image = shower_image(geometry, rng)
            waveform = image[np.newaxis, :, np.newaxis] * pulse + rng.normal(
                0, 0.3, (1, n_pixels, n_samples))
            stored = np.clip((waveform + offset) * scale, 0, 65535).astype(np.uint16)
            tel.write_message(Telescope.Event(
                event_id=event_id, tel_id=1, event_type=EventType.SUBARRAY.value,
                event_time_s=int(seconds), event_time_qns=int(quarter_ns),
                # signal, high gain stored
                pixel_status=numpy_to_any_array(np.full(n_pixels, 0b00000101, np.uint8)),
                waveform=numpy_to_any_array(stored), num_channels=1, num_samples=n_samples,
                num_pixels_survived=n_pixels))
    return trigger_path


def ctapipe_dl1(path: Path, **source_options) -> dict:
    """ctapipe's own CameraCalibrator + ImageProcessor on a file: {(event_id, tel_id): ...}."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.image import ImageProcessor
    from ctapipe.io import EventSource

    out = {}
    with EventSource(path, **source_options) as source:
        calibrate, process = CameraCalibrator(source.subarray), ImageProcessor(source.subarray)
        for event in source:
            calibrate(event)
            process(event)
            for tel_id, dl1 in event.dl1.tel.items():
                out[(event.index.event_id, tel_id)] = {
                    "image": dl1.image, "mask": dl1.image_mask,
                    "hillas": dl1.parameters.hillas}
    return out


def test_flow_run_reads_acada_dl0_zfits(tmp_path):
    trigger = write_acada_dl0(tmp_path / "acada", N_ZFITS)
    from ctapipe.io import EventSource

    with EventSource(trigger) as source:
        assert type(source).__name__ == "ProtozfitsDL0EventSource"
    output = tmp_path / "dl1.h5"
    flow_run(dl1_graph(tmp_path, f"{{path: '{trigger}'}}", output))
    ours, ref = read_dl1(output), ctapipe_dl1(trigger)
    assert sorted(ours) == sorted(ref) and len(ours) == N_ZFITS
    n_cleaned = 0
    for key, r in ref.items():
        o = ours[key]
        np.testing.assert_allclose(o["image"], r["image"], rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(o["mask"], r["mask"])
        n_cleaned += int(r["mask"].sum() > 10)
        for name in ("intensity", "length", "width", "fov_lon", "fov_lat"):
            value = getattr(r["hillas"], name)
            np.testing.assert_allclose(o["params"][f"hillas_{name}"],
                                       getattr(value, "value", value), rtol=1e-4, atol=1e-7,
                                       err_msg=name)
    assert n_cleaned == N_ZFITS  # every written shower survived cleaning on both sides


# --- HDF5EventSource ---------------------------------------------------------------------------

def run_ctapipe_process(simtel: Path, output: Path, n_events: int) -> None:
    tool = os.path.join(os.path.dirname(sys.executable), "ctapipe-process")
    done = subprocess.run([tool, f"--input={simtel}", f"--output={output}", "--write-images",
                           "--write-parameters", f"--max-events={n_events}", "--overwrite",
                           "--quiet"], capture_output=True, text=True, timeout=600,
                          cwd=output.parent)  # its provenance log goes there too
    assert done.returncode == 0, done.stderr[-2000:]


def test_flow_run_reads_ctapipe_dl1_through_hdf5_event_source(tmp_path):
    ctapipe_file = tmp_path / "ctapipe_dl1.h5"
    run_ctapipe_process(find_dataset(SST1M), ctapipe_file, 6)
    output = tmp_path / "flow_dl1.h5"
    read = f"{{path: '{ctapipe_file}', source: HDF5EventSource}}"
    flow_run(dl1_graph(tmp_path, read, output, steps=("clean", "parameters")))
    ours, ref = read_dl1(output), read_dl1(ctapipe_file)
    assert sorted(ours) == sorted(ref) and len(ref) > 10
    n_parametrised = 0
    for key, r in ref.items():
        o = ours[key]
        np.testing.assert_array_equal(o["image"], r["image"])
        np.testing.assert_array_equal(o["mask"], r["mask"])
        for name in ("hillas_intensity", "hillas_length", "hillas_psi", "leakage_pixels_width_1",
                     "concentration_core", "morphology_n_pixels", "intensity_std",
                     "peak_time_skewness"):  # timing: see test_stages_vs_ctapipe (LTS seeds)
            np.testing.assert_allclose(o["params"][name], r["params"][name], rtol=1e-4, atol=1e-9,
                                       err_msg=f"{key} {name}")
        n_parametrised += bool(np.isfinite(r["params"]["hillas_intensity"]))
    assert n_parametrised > 5


def read_true_params(path: Path) -> dict:
    """{(event_id, tel_id): row} of /simulation/event/telescope/parameters."""
    with tables.open_file(str(path)) as h5:
        return {(int(r["event_id"]), int(r["tel_id"])): r
                for table in h5.root.simulation.event.telescope.parameters for r in table.read()}


def test_hdf5_event_source_reads_flow_dl1(tmp_path):
    from ctapipe.io import HDF5EventSource

    flow_file = tmp_path / "flow_dl1.h5"
    flow_run(dl1_graph(tmp_path, f"{{path: 'dataset:{SST1M}', max_events: 3, source: "
                                 "SimTelEventSource}", flow_file))
    assert HDF5EventSource.is_compatible(flow_file)
    ours, true_params = read_dl1(flow_file), read_true_params(flow_file)
    assert true_params.keys() == ours.keys() and len(ours) >= 3
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = HDF5EventSource(flow_file)
    assert source.is_simulation and source.has_simulated_dl1
    with source:
        for event in source:
            for tel_id, dl1 in event.dl1.tel.items():
                key = (event.index.event_id, tel_id)
                seen.add(key)
                np.testing.assert_array_equal(dl1.image, ours[key]["image"])
                np.testing.assert_array_equal(dl1.image_mask, ours[key]["mask"])
                hillas = dl1.parameters.hillas
                np.testing.assert_allclose(hillas.intensity, ours[key]["params"]["hillas_intensity"])
                true = event.simulation.tel[tel_id]
                row = true_params[key]
                positive = true.true_image[true.true_image > 0]
                assert true.true_image_sum == int(true.true_image.sum())
                np.testing.assert_allclose(true.true_parameters.hillas.intensity,
                                           row["true_hillas_intensity"])
                if len(positive) > 1:  # else ctapipe's defaults (ImageQualityQuery fails)
                    np.testing.assert_allclose(true.true_parameters.hillas.intensity,
                                               positive.sum())
                    assert true.true_parameters.morphology.n_pixels == len(positive)
                    assert true.true_parameters.intensity_statistics.max == positive.max()
                else:
                    assert true.true_parameters.morphology.n_pixels == -1
                np.testing.assert_allclose(true.true_parameters.hillas.width.to_value("deg"),
                                           row["true_hillas_width"])
    assert seen == ours.keys()
    again = tmp_path / "again.h5"
    flow_run(dl1_graph(tmp_path, f"{{path: '{flow_file}'}}", again, steps=("clean", "parameters")))
    reprocessed = read_dl1(again)
    assert reprocessed.keys() == ours.keys()
    for key, o in ours.items():
        np.testing.assert_array_equal(reprocessed[key]["mask"], o["mask"])
        for name in ("hillas_intensity", "hillas_length", "leakage_intensity_width_2",
                     "morphology_n_pixels", "concentration_core", "intensity_std"):
            np.testing.assert_allclose(reprocessed[key]["params"][name], o["params"][name],
                                       rtol=1e-6, err_msg=f"{key} {name}")
    again_true = read_true_params(again)
    for key, row in true_params.items():
        for name in ("true_hillas_intensity", "true_hillas_psi", "true_leakage_pixels_width_1"):
            np.testing.assert_allclose(again_true[key][name], row[name], rtol=1e-9)
