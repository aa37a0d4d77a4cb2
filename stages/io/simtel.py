"""sim_telarray files read with eventio, as R1 events in the flow event layout.

`SimtelSource` reads a sim_telarray file (``.simtel``, ``.gz``, ``.zst``) with ``eventio.SimTelFile``
and yields one event per array event (docs/event-schema.md), keyed ``"{obs_id}:{event_id}"``. The R1
waveforms are those of ctapipe 0.28's ``SimTelEventSource`` with default options: pedestal per
sample subtracted, scaled by the file's dc_to_pe, and for physics events the gain selected like
ctapipe's ``ThresholdGainSelector`` (low gain where any high-gain R0 sample exceeds 4000 counts),
giving shape (1, n_pix, n_samples); calibration events keep all gains.

The subarray it publishes matches ctapipe's ``SubarrayDescription`` of the same file: positions from
the run header, pixel positions derotated by the camera rotation, ctapipe's neighbour relation, the
readout (samples, sampling rate, reference pulse shape and its sample width).

A truncated or corrupt file ends the stream with a warning naming the file and the last good event;
eventio runs in a reader thread so that a stalled read (``read_timeout_s``) cannot hang the pipeline.

This producer does everything serially (~65 events/s on the SST-1M file, however many cores). The
shipped configs split it: `stages.io.simtel_frames.SimtelFrames` (a subclass: same parameters,
context, keys and warnings) only frames the raw objects, `stages.io.simtel_parser.SimtelParser`
parses them in the workers; the R1 recipe both use is `stages.io.simtel_event`.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from flow.errors import DataError
from flow.graph.params import REQUIRED, Param
from flow.graph.step import InputWarning, Keyed, Producer

from ..datasets import resolve_path
from .geometry import camera_dict
from .simtel_event import (  # noqa: F401 - re-exported: the R1 recipe lived here
    GAIN_THRESHOLD,
    clip_altitude,
    convert_event,
    event_calibration,
    has_true_image,
    prepared_run,
    r1_waveform,
    run_record,
    select_gain,
)
from .telescope_guess import guess_telescope

log = logging.getLogger(__name__)

# sim_telarray pixel_shape -> (ctapipe pixel type, pixel rotation in deg)
PIXEL_SHAPES = {0: ("circle", 0.0), 1: ("hexagon", 0.0), 2: ("square", 0.0), 3: ("hexagon", 30.0)}
_END = object()


class SimtelReadWarning(InputWarning):
    """A sim_telarray file ended early (truncated or corrupt); the events before it were read
    (the engine reports it in the run summary and the statistics stream)."""


def telescope_names(tel_meta: dict, n_pixels: int, focal_length: float, n_mirrors: int):
    """(optics name, camera name) from the telescope metadata, else ctapipe's guess table."""
    optics, camera = tel_meta.get(b"OPTICS_CONFIG_NAME"), tel_meta.get(b"CAMERA_CONFIG_NAME")
    if optics is not None and camera is not None:
        return optics.decode(), camera.decode()
    guess = guess_telescope(n_pixels, focal_length, n_mirrors)
    if guess is None:   # an unknown telescope
        return "UNKNOWN", f"UNKNOWN-{n_pixels}px"
    return guess.name, guess.camera_name


def build_camera(desc: dict, camera_name: str, source: str) -> dict:
    """Context camera mapping from an eventio telescope description (ctapipe's build_camera)."""
    cam = desc["camera_settings"]
    shape = int(np.atleast_1d(cam["pixel_shape"])[0])
    if shape not in PIXEL_SHAPES:
        warnings.warn(f"{source}: unknown pixel_shape {shape} for camera {camera_name}, "
                      "assuming hexagon (as ctapipe)", stacklevel=2)
    pix_type, pix_rot = PIXEL_SHAPES.get(shape, ("hexagon", 0.0))
    # ctapipe: cam_rotation = -cam_rot, then rotate(cam_rotation) with R(psi).T @ (x, y)
    psi = -float(cam["cam_rot"])
    x, y = np.asarray(cam["pixel_x"], np.float64), np.asarray(cam["pixel_y"], np.float64)
    rot = np.array([[np.cos(psi), -np.sin(psi)], [np.sin(psi), np.cos(psi)]])
    pix_x, pix_y = np.dot(rot.T, [x, y])
    return camera_dict(camera_name, pix_x, pix_y, np.asarray(cam["pixel_area"], np.float64),
                       pix_type, pix_rotation_deg=pix_rot - np.rad2deg(psi), cam_rotation_deg=0.0)


def cached_camera(cache: dict, desc: dict, camera_name: str, source: str) -> dict:
    """build_camera once per distinct camera (telescopes of one type share the arrays)."""
    cam = desc["camera_settings"]
    key = (camera_name, float(cam["cam_rot"]), np.asarray(cam["pixel_x"]).tobytes(),
           np.asarray(cam["pixel_y"]).tobytes(), np.asarray(cam["pixel_shape"]).tobytes())
    if key not in cache:
        cache[key] = build_camera(desc, camera_name, source)
    return cache[key]


def build_subarray(f, allowed_tels, source: str) -> dict:
    """The context subarray of an open SimTelFile (same values as ctapipe's SubarrayDescription)."""
    header, tels, cameras = f.header, {}, {}
    telescope_meta = getattr(f, "telescope_meta", {}) or {}
    for tel_id, desc in f.telescope_descriptions.items():
        if allowed_tels and tel_id not in allowed_tels:
            continue
        cam, pix = desc["camera_settings"], desc["pixel_settings"]
        equivalent = float(cam["focal_length"])
        effective = float(cam.get("effective_focal_length", np.nan))
        optics_name, camera_name = telescope_names(telescope_meta.get(tel_id, {}),
                                                   int(cam["n_pixels"]), equivalent,
                                                   int(cam["n_mirrors"]))
        index = int(np.nonzero(header["tel_id"] == tel_id)[0][0])
        tels[int(tel_id)] = {
            "position": np.asarray(header["tel_pos"][index], dtype=np.float64),
            "optics": {
                "name": optics_name,
                "focal_length": effective if np.isfinite(effective) else equivalent,
                "equivalent_focal_length": equivalent,
                "effective_focal_length": effective,
                "mirror_area": float(cam["mirror_area"]),
                "n_mirror_tiles": int(cam["n_mirrors"]),
            },
            "camera": cached_camera(cameras, desc, camera_name, source),
            "n_gains": int(desc["camera_organization"]["n_gains"]),
            "n_samples": int(pix["sum_bins"]),
            "sampling_rate_ghz": float(1.0 / np.float64(pix["time_slice"])),
            "reference_pulse_shape": np.asarray(pix["ref_shape"], dtype=np.float64),
            "reference_pulse_sample_width_ns": float(np.float64(pix["ref_step"])),
        }
    meta = f.global_meta or {}
    name = meta.get(b"ARRAY_CONFIG_NAME", b"MonteCarloArray").decode()
    lat, lon, height = meta.get(b"*LATITUDE"), meta.get(b"*LONGITUDE"), meta.get(b"ALTITUDE")
    if lat is None or lon is None or height is None:
        lat, lon, height = 0.0, 0.0, f.mc_run_headers[-1]["obsheight"]
    location = {"lon_deg": float(lon), "lat_deg": float(lat), "height_m": float(height)}
    return {"name": name, "tels": tels, "reference_location": location}


def read_calibration(f, subarray: dict) -> dict:
    """Per-telescope calibration of the file (docs/event-schema.md ``context["calibration"]``).

    sim_telarray writes the monitoring and laser calibration blocks before the first event, so this
    reads one event. ``time_shift_ns`` (tm_calib) and ``outlier_mask`` (HV-disabled pixels) are what
    ctapipe's CameraCalibrator applies to R1; pedestal and dc_to_pe are those used for our R1.
    """
    try:
        next(iter(f))
    except Exception:  # noqa: BLE001 - no event: no calibration, the reader will warn
        return {}
    out = {}
    for tel_id, desc in f.telescope_descriptions.items():
        lascal = f.laser_calibrations.get(tel_id)
        cam_mon = f.camera_monitorings.get(tel_id)
        if tel_id not in subarray["tels"] or lascal is None or cam_mon is None:
            continue
        n_gains, n_pix = np.shape(lascal["calib"])
        outliers = np.zeros((n_gains, n_pix), dtype=bool)
        outliers[:, desc["disabled_pixels"]["HV_disabled"]] = True
        out[int(tel_id)] = {
            "pedestal_per_sample": np.asarray(cam_mon["pedestal"] / cam_mon["n_ped_slices"],
                                              dtype=np.float64),
            "dc_to_pe": np.asarray(lascal["calib"], dtype=np.float64),
            "time_shift_ns": np.asarray(lascal["tm_calib"], dtype=np.float64),
            "outlier_mask": outliers,
        }
    return out


class SimtelSource(Producer):
    """Events of a sim_telarray file, R1-calibrated like ctapipe's SimTelEventSource."""

    replayable = True

    path = Param(str, REQUIRED, "sim_telarray file, or dataset:NAME (see stages.datasets)")
    max_events = Param(int, 0, "stop after this many events (0 = all)")
    allowed_tels = Param(list, None, "telescope ids to read (default: all)")
    skip_calibration_events = Param(bool, True, "skip calibration (pedestal, flat-field) events")
    read_timeout_s = Param(float, 120.0, "end the stream with a warning if one read stalls this long")
    max_event_mb = Param(float, 4096.0, "end the stream if one event's waveforms exceed this size")

    def _open(self):
        from eventio import SimTelFile

        path = resolve_path(self.path)
        if not path.is_file():
            raise DataError(f"sim_telarray file {path} does not exist")
        allowed = set(self.allowed_tels) if self.allowed_tels else None
        try:
            return path, SimTelFile(str(path), allowed_telescopes=allowed,
                                    skip_calibration=self.skip_calibration_events)
        except Exception as exc:  # eventio raises many types on a bad header
            raise DataError(f"{path}: cannot read the sim_telarray header ({exc})") from exc

    def publish_context(self) -> dict:
        if not hasattr(self, "_context"):
            path, f = self._open()
            with f:
                subarray = build_subarray(f, self.allowed_tels, str(path))
                calibration = read_calibration(f, subarray)
                self._context = {"subarray": subarray, "calibration": calibration,
                                 "provenance": {"input_files": [str(path)]}}
                self._record = run_record(f, self._context)
        return self._context

    def total(self) -> int | None:
        return None

    def process(self) -> Iterator[Keyed]:
        context = self.publish_context()
        path, f = self._open()
        self._run = prepared_run(run_record(f, context))
        yield from self._pump(path, f, f.close, self._convert)

    def _pump(self, path: Path, items, close, make_event) -> Iterator[Keyed]:
        """Keyed events of ``make_event(item, event_id)`` for the items a reader thread takes
        from ``items`` (``close()`` once it is done), up to ``max_events``; ends with a
        SimtelReadWarning on a stalled read, a reading error or a malformed or oversized event."""
        stop = threading.Event()
        buffer: queue.Queue = queue.Queue(maxsize=4)
        reader = threading.Thread(target=self._read, args=(items, buffer, stop), daemon=True,
                                  name=f"simtel-reader-{path.name}")
        reader.start()
        last_good, count, pseudo_id = None, 0, 0
        try:
            while self.max_events == 0 or count < self.max_events:
                try:
                    item = buffer.get(timeout=self.read_timeout_s)
                except queue.Empty:
                    self._warn(path, last_good, f"no data for {self.read_timeout_s:.0f} s")
                    return
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    self._warn(path, last_good, f"{type(item).__name__}: {item}")
                    return
                event_id = int(item.get("event_id", 0))
                if event_id == 0:
                    pseudo_id -= 1
                    event_id = pseudo_id
                try:
                    event = make_event(item, event_id)
                except Exception as exc:  # a corrupt block that eventio parsed into nonsense
                    self._warn(path, last_good, f"event {event_id} is malformed ({exc!r})")
                    return
                if event is None:
                    self._warn(path, last_good, f"event {event_id} exceeds {self.max_event_mb} MB")
                    return
                yield Keyed(f"{event['obs_id']}:{event_id}", event)
                last_good, count = event_id, count + 1
        finally:
            stop.set()
            reader.join(timeout=0 if reader.is_alive() and buffer.full() else 5)
            if not reader.is_alive():
                close()

    @staticmethod
    def _read(items, buffer: queue.Queue, stop: threading.Event) -> None:
        """Reader thread: the items (array events), then _END, or the exception that ended
        reading."""
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    buffer.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        caught: list = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for item in items:
                    if not put(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer of the queue
            put(exc)
            return
        finally:   # eventio ends a truncated file with a plain UserWarning: that is an error here
            cut = [w for w in caught if w.category is UserWarning and "eventio" in w.filename]
            for w in caught:
                if w not in cut:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        put(EOFError(str(cut[0].message)) if cut else _END)

    @staticmethod
    def _warn(path: Path, last_good, why: str) -> None:
        where = f"after event {last_good}" if last_good is not None else "before the first event"
        msg = f"{path}: stopped reading {where}; file truncated or corrupt ({why})"
        log.warning(msg)
        warnings.warn(msg, SimtelReadWarning, stacklevel=3)

    def _convert(self, array_event: dict, event_id: int) -> dict | None:
        return convert_event(array_event, event_id, self._run, self.max_event_mb)
