"""Any ctapipe ``EventSource`` as a flow producer: its events as flow's arrays, its subarray as context.

`CtapipeSource` opens a file with ``ctapipe.io.EventSource`` — the reader ctapipe picks for the
file (``is_compatible``), or the one named by ``source``: ``SimTelEventSource``,
``HDF5EventSource`` (ctapipe DL1/DL2 files, flow's own included), and the plugins found through
ctapipe's ``ctapipe_io`` entry points (``LSTEventSource`` for LST-1 R0/R1, ``ProtozfitsDL0EventSource``
for ACADA DL0 zfits, ...). sim_telarray files keep their faster reader, `stages.io.simtel.SimtelSource`.

Contract (docs/event-schema.md):
- `context_from_subarray` turns a ``SubarrayDescription`` into ``context["subarray"]`` with the same
  keys and values `SimtelSource` publishes (pixel arrays in m, ctapipe's own neighbour CSR, the
  readout and both focal lengths).
- `event_from_container` turns one ``ArrayEventContainer`` into one flow event: ids, pointing,
  simulated shower, and per telescope the R1 (else DL0) ``waveform`` with its
  ``selected_gain_channel``, the ``calibration`` the event carries (time shift, outlier mask), DL1
  ``image``/``peak_time``/``mask`` where the file has them, and the true image. Arrays only: no
  container ever reaches the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from flow.errors import DataError
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Keyed, Producer

from ..datasets import resolve_path

log = logging.getLogger(__name__)


def _value(quantity, unit: str) -> float:
    """float of a Quantity in ``unit`` (NaN if None or not finite)."""
    if quantity is None:
        return float("nan")
    return float(quantity.to_value(unit))


def camera_entry(camera) -> dict:
    """``context["subarray"]["tels"][tid]["camera"]`` of a ctapipe CameraDescription."""
    geom = camera.geometry
    neighbors = geom.neighbor_matrix_sparse
    return {
        "name": camera.name,
        "pix_x": geom.pix_x.to_value("m").astype(np.float64),
        "pix_y": geom.pix_y.to_value("m").astype(np.float64),
        "pix_area": np.broadcast_to(geom.pix_area.to_value("m2"), geom.pix_x.shape).astype(
            np.float64),
        "pix_type": geom.pix_type.value,
        "pix_rotation_deg": float(geom.pix_rotation.to_value("deg")),
        "cam_rotation_deg": float(geom.cam_rotation.to_value("deg")),
        "neighbors_indptr": neighbors.indptr.astype(np.int32),
        "neighbors_indices": neighbors.indices.astype(np.int32),
    }


def telescope_entry(subarray, tel_id: int, camera: dict) -> dict:
    """One telescope's context entry (position, optics, camera, readout)."""
    tel = subarray.tel[tel_id]
    optics, readout = tel.optics, tel.camera.readout
    equivalent = _value(optics.equivalent_focal_length, "m")
    effective = _value(optics.effective_focal_length, "m")
    return {
        "position": subarray.positions[tel_id].to_value("m").astype(np.float64),
        "optics": {
            "name": optics.name,
            "focal_length": effective if np.isfinite(effective) else equivalent,
            "equivalent_focal_length": equivalent,
            "effective_focal_length": effective,
            "mirror_area": _value(optics.mirror_area, "m2"),
            "n_mirror_tiles": int(optics.n_mirror_tiles),
        },
        "camera": camera,
        "n_gains": int(readout.n_channels),
        "n_samples": int(readout.n_samples),
        "sampling_rate_ghz": _value(readout.sampling_rate, "GHz"),
        "reference_pulse_shape": np.asarray(readout.reference_pulse_shape, dtype=np.float64),
        "reference_pulse_sample_width_ns": _value(readout.reference_pulse_sample_width, "ns"),
    }


def context_from_subarray(subarray) -> dict:
    """``context["subarray"]`` (the layout SimtelSource publishes) of a SubarrayDescription."""
    cameras = {}
    tels = {}
    for tel_id, tel in subarray.tel.items():
        if tel.camera.name not in cameras:
            cameras[tel.camera.name] = camera_entry(tel.camera)
        tels[int(tel_id)] = telescope_entry(subarray, tel_id, cameras[tel.camera.name])
    location = {"lon_deg": 0.0, "lat_deg": 0.0, "height_m": 0.0}
    if subarray.reference_location is not None:
        geodetic = subarray.reference_location.geodetic
        location = {"lon_deg": float(geodetic.lon.deg), "lat_deg": float(geodetic.lat.deg),
                    "height_m": float(geodetic.height.to_value("m"))}
    return {"name": subarray.name, "tels": tels, "reference_location": location}


def _pointing(container) -> dict | None:
    """{"alt", "az"} in rad of a pointing container, or None if unknown."""
    if container is None:
        return None
    alt = getattr(container, "array_altitude", getattr(container, "altitude", None))
    az = getattr(container, "array_azimuth", getattr(container, "azimuth", None))
    alt, az = _value(alt, "rad"), _value(az, "rad")
    return {"alt": alt, "az": az} if np.isfinite(alt) and np.isfinite(az) else None


def _simulation(shower) -> dict:
    return {"energy": _value(shower.energy, "TeV"), "alt": _value(shower.alt, "rad"),
            "az": _value(shower.az, "rad"), "core_x": _value(shower.core_x, "m"),
            "core_y": _value(shower.core_y, "m"), "h_first_int": _value(shower.h_first_int, "m"),
            "x_max": _value(shower.x_max, "g cm-2"),
            "shower_primary_id": int(shower.shower_primary_id)}


def _calibration(event, tel_id: int) -> dict:
    """The time shift and outlier mask an event's monitoring holds for one telescope."""
    coefficients = event.monitoring.tel[tel_id].camera.coefficients if (
        tel_id in event.monitoring.tel) else None
    out = {}
    for key, name in (("time_shift", "time_shift_ns"), ("outlier_mask", "outlier_mask")):
        value = getattr(coefficients, key, None)
        if value is not None:
            out[name] = np.asarray(value, dtype=bool if key == "outlier_mask" else np.float64)
    return out


def _waveform(event, tel_id: int):
    """(waveform float32, selected_gain_channel int8 or None) from R1, else DL0, else None."""
    for level in (event.r1, event.dl0):
        data = level.tel.get(tel_id) if tel_id in level.tel else None
        if data is not None and data.waveform is not None:
            selected = data.selected_gain_channel
            return (np.asarray(data.waveform, dtype=np.float32),
                    None if selected is None else np.asarray(selected, dtype=np.int8))
    return None, None


def telescope_event(event, tel_id: int) -> dict:
    """One telescope's flow entry of an ArrayEventContainer (see module docstring)."""
    tel: dict = {}
    waveform, selected = _waveform(event, tel_id)
    if waveform is not None:
        tel["waveform"] = waveform if waveform.ndim == 3 else waveform[np.newaxis]
        if selected is not None:
            tel["selected_gain_channel"] = selected
        calibration = _calibration(event, tel_id)
        if calibration:
            tel["calibration"] = calibration
    dl1 = event.dl1.tel[tel_id] if tel_id in event.dl1.tel else None
    if dl1 is not None and dl1.image is not None:
        tel["image"] = np.asarray(dl1.image, dtype=np.float32)
        if dl1.peak_time is not None:
            tel["peak_time"] = np.asarray(dl1.peak_time, dtype=np.float32)
        if dl1.image_mask is not None:
            tel["mask"] = np.asarray(dl1.image_mask, dtype=bool)
    if event.simulation is not None and tel_id in event.simulation.tel:
        true_image = event.simulation.tel[tel_id].true_image
        if true_image is not None:
            tel["true_image"] = np.asarray(true_image, dtype=np.int32)
    pointing = _pointing(event.monitoring.tel[tel_id].pointing) if (
        tel_id in event.monitoring.tel) else None
    if pointing is not None:
        tel["pointing"] = pointing
    return tel


def telescope_ids(event) -> list[int]:
    """The telescopes with data in an event, in id order."""
    ids = set(event.r1.tel) | set(event.dl0.tel) | set(event.dl1.tel)
    return sorted(int(t) for t in ids)


def event_from_container(event) -> dict:
    """A flow event (docs/event-schema.md) of one ctapipe ArrayEventContainer."""
    out = {"obs_id": int(event.index.obs_id), "event_id": int(event.index.event_id)}
    pointing = _pointing(event.monitoring.pointing)
    out["pointing"] = pointing or {"alt": float("nan"), "az": float("nan")}
    shower = event.simulation.shower if event.simulation is not None else None
    if shower is not None and np.isfinite(_value(shower.energy, "TeV")):
        out["simulation"] = _simulation(shower)
    tels = {}
    for tel_id in telescope_ids(event):
        tel = telescope_event(event, tel_id)
        if tel:
            tels[tel_id] = tel
    out["tels"] = tels
    return out


def available_sources() -> list[str]:
    """Names of the EventSource classes ctapipe knows (built-ins and entry-point plugins)."""
    from ctapipe.io import EventSource

    return sorted(EventSource.non_abstract_subclasses())


class CtapipeSource(Producer):
    """Events of any file a ctapipe EventSource reads, in flow's event layout."""

    path = Param(str, REQUIRED, "input file (any format ctapipe reads), or dataset:NAME")
    source = Param(str, None, "EventSource class (e.g. HDF5EventSource, LSTEventSource); "
                              "default: the one ctapipe finds compatible with the file")
    max_events = Param(int, 0, "stop after this many events (0 = all)")
    allowed_tels = Param(list, None, "telescope ids to read (default: all)")
    config = Param(dict, {}, "ctapipe configuration of the source, as in a ctapipe-process "
                             "YAML, e.g. {SimTelEventSource: {focal_length_choice: EQUIVALENT}}")

    def _open(self):
        from ctapipe.io import EventSource
        from traitlets.config import Config

        path = resolve_path(self.path)
        if not path.exists():
            raise DataError(f"{path} does not exist")
        kwargs = {"config": Config(self.config or {})}
        if self.max_events:
            kwargs["max_events"] = int(self.max_events)
        if self.allowed_tels:
            kwargs["allowed_tels"] = set(int(t) for t in self.allowed_tels)
        try:
            if self.source:
                classes = EventSource.non_abstract_subclasses()
                if self.source not in classes:
                    raise DataError(f"{path}: unknown EventSource {self.source!r}; ctapipe knows "
                                    f"{', '.join(sorted(classes))}")
                return path, classes[self.source](input_url=path, **kwargs)
            return path, EventSource(path, **kwargs)
        except DataError:
            raise
        except Exception as exc:  # ctapipe raises ValueError, TraitError, OSError...
            raise DataError(f"{path}: no ctapipe EventSource can read it "
                            f"({type(exc).__name__}: {exc})") from exc

    def publish_context(self) -> dict:
        if not hasattr(self, "_context"):
            path, source = self._open()
            with source:
                self._context = {"subarray": context_from_subarray(source.subarray),
                                 "calibration": {},
                                 "provenance": {"input_files": [str(path)],
                                                "reader": type(source).__name__}}
        return self._context

    def total(self) -> int | None:
        return None

    def process(self) -> Iterator[Keyed]:
        self.publish_context()
        path, source = self._open()
        with source:
            for container in source:
                event = event_from_container(container)
                yield Keyed(f"{event['obs_id']}:{event['event_id']}", event)
