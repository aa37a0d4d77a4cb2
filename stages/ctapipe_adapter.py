"""Run ctapipe components as stagers that exchange arrays, never pickled containers.

Each adapter builds ctapipe's ``SubarrayDescription`` once in ``setup`` from
``self.context["subarray"]`` (no download: CameraGeometry, CameraReadout, OpticsDescription are made
from the context arrays), and for each event fills a minimal ``ArrayEventContainer`` from the event
dict, calls the component, and writes the results back as arrays/floats in the layout of
docs/event-schema.md:

- `CtapipeCalibrator`: ``CameraCalibrator`` on R1 ``waveform`` -> ``image``, ``peak_time``.
- `CtapipeImageProcessor`: ``ImageProcessor`` (cleaning + parameters) -> ``mask``, flat ``params``.
- `CtapipeShowerProcessor`: ``ShowerProcessor`` (HillasReconstructor...) -> ``dl2``.
- `CallableStager`: any ``module:function`` applied to one field (per telescope or per event).

``config`` is a ctapipe (traitlets) configuration mapping, as in a ctapipe-process YAML, e.g.
``{ImageProcessor: {image_cleaner_type: TailcutsImageCleaner}}``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from flow.graph.params import REQUIRED, Param
from flow.graph.step import Stager, import_object


def ctapipe_subarray(context_subarray: dict):
    """ctapipe SubarrayDescription equal to the context's (arrays -> ctapipe objects)."""
    import astropy.units as u
    from astropy.coordinates import EarthLocation
    from ctapipe.coordinates import CameraFrame
    from ctapipe.instrument import (
        CameraDescription,
        CameraGeometry,
        CameraReadout,
        OpticsDescription,
        ReflectorShape,
        SizeType,
        SubarrayDescription,
        TelescopeDescription,
    )
    from scipy.sparse import csr_array

    descriptions, positions, cameras = {}, {}, {}
    for tel_id, tel in context_subarray["tels"].items():
        cam, opt = tel["camera"], tel["optics"]
        n_pix = len(cam["pix_x"])
        key = id(cam), opt["focal_length"]
        if key not in cameras:
            neighbors = csr_array((np.ones(len(cam["neighbors_indices"]), dtype=bool),
                                   np.asarray(cam["neighbors_indices"]),
                                   np.asarray(cam["neighbors_indptr"])), shape=(n_pix, n_pix))
            geometry = CameraGeometry(
                cam["name"], pix_id=np.arange(n_pix), pix_x=np.asarray(cam["pix_x"]) * u.m,
                pix_y=np.asarray(cam["pix_y"]) * u.m, pix_area=np.asarray(cam["pix_area"]) * u.m**2,
                pix_type=cam["pix_type"], pix_rotation=cam["pix_rotation_deg"] * u.deg,
                cam_rotation=cam["cam_rotation_deg"] * u.deg, neighbors=neighbors,
                apply_derotation=False, frame=CameraFrame(focal_length=opt["focal_length"] * u.m))
            readout = CameraReadout(
                cam["name"], sampling_rate=tel["sampling_rate_ghz"] * u.GHz,
                reference_pulse_shape=np.asarray(tel["reference_pulse_shape"], dtype=np.float64),
                reference_pulse_sample_width=tel["reference_pulse_sample_width_ns"] * u.ns,
                n_channels=tel.get("n_gains", 1), n_pixels=n_pix, n_samples=tel["n_samples"])
            cameras[key] = CameraDescription(cam["name"], geometry=geometry, readout=readout)
        optics = OpticsDescription(
            name=opt["name"], size_type=SizeType.UNKNOWN, reflector_shape=ReflectorShape.UNKNOWN,
            n_mirrors=1, equivalent_focal_length=opt["equivalent_focal_length"] * u.m,
            effective_focal_length=opt.get("effective_focal_length", np.nan) * u.m,
            mirror_area=(opt.get("mirror_area") or 0.0) * u.m**2,
            n_mirror_tiles=opt.get("n_mirror_tiles", 1))
        descriptions[tel_id] = TelescopeDescription(name=opt["name"], optics=optics,
                                                    camera=cameras[key])
        positions[tel_id] = np.asarray(tel["position"]) * u.m
    loc = context_subarray.get("reference_location") or {}
    location = EarthLocation(lon=loc.get("lon_deg", 0.0) * u.deg, lat=loc.get("lat_deg", 0.0) * u.deg,
                             height=loc.get("height_m", 0.0) * u.m)
    return SubarrayDescription(context_subarray.get("name", "flow"), tel_positions=positions,
                               tel_descriptions=descriptions, reference_location=location)


def array_event(event: dict, calibration: dict | None = None):
    """A minimal ArrayEventContainer holding the event's ids, pointing, R1 and DL1 arrays."""
    import astropy.units as u
    from ctapipe.containers import (
        ArrayEventContainer,
        DL1CameraContainer,
        EventType,
        PixelStatus,
        R1CameraContainer,
        TelescopePointingContainer,
    )

    ev = ArrayEventContainer()
    ev.index.obs_id, ev.index.event_id = event["obs_id"], event["event_id"]
    ev.trigger.event_type = EventType.SUBARRAY
    ev.trigger.tels_with_trigger = np.array(sorted(event["tels"]), dtype=np.uint16)
    alt, az = event["pointing"]["alt"] * u.rad, event["pointing"]["az"] * u.rad
    ev.monitoring.pointing.array_altitude, ev.monitoring.pointing.array_azimuth = alt, az
    for tel_id, tel in event["tels"].items():
        pointing = tel.get("pointing") or event["pointing"]
        ev.monitoring.tel[tel_id].pointing = TelescopePointingContainer(
            altitude=pointing["alt"] * u.rad, azimuth=pointing["az"] * u.rad)
        cal = (calibration or {}).get(tel_id, {})
        coeff = ev.monitoring.tel[tel_id].camera.coefficients
        if "time_shift_ns" in cal:
            coeff.time_shift = np.asarray(cal["time_shift_ns"])
        if "outlier_mask" in cal:
            coeff.outlier_mask = np.asarray(cal["outlier_mask"])
        if "waveform" in tel:
            waveform = np.asarray(tel["waveform"], dtype=np.float32)
            selected = tel.get("selected_gain_channel")
            status = np.zeros(waveform.shape[1], dtype=np.uint8)
            if selected is not None:
                status[selected == 0] |= np.uint8(PixelStatus.HIGH_GAIN_STORED)
                status[selected == 1] |= np.uint8(PixelStatus.LOW_GAIN_STORED)
            if "outlier_mask" in cal:
                status[np.asarray(cal["outlier_mask"]).all(axis=0)] &= ~np.uint8(
                    PixelStatus.HIGH_GAIN_STORED | PixelStatus.LOW_GAIN_STORED)
            if coeff.outlier_mask is None:  # extractors index it by the selected gain
                coeff.outlier_mask = np.zeros((max(2, waveform.shape[0]), waveform.shape[1]), bool)
            ev.r1.tel[tel_id] = R1CameraContainer(
                event_type=EventType.SUBARRAY, waveform=waveform, selected_gain_channel=selected,
                pixel_status=status)
        if "image" in tel:
            ev.dl1.tel[tel_id] = DL1CameraContainer(
                image=np.asarray(tel["image"], dtype=np.float32),
                peak_time=np.asarray(tel.get("peak_time"), dtype=np.float32)
                if tel.get("peak_time") is not None else None,
                image_mask=np.asarray(tel["mask"], dtype=bool) if "mask" in tel else None)
    return ev


def flat_parameters(parameters) -> dict[str, Any]:
    """ImageParametersContainer -> flat dict in ctapipe column names, values in stored units."""
    out = {}
    for _, sub in parameters.items():
        if not hasattr(sub, "fields"):
            continue
        for field_name, field in sub.fields.items():
            value = sub[field_name]
            if hasattr(value, "unit"):  # stored in the field's declared unit (psi: deg, not rad)
                value = value.to_value(field.unit) if field.unit is not None else value.value
            if value is not None and np.ndim(value) == 0:
                out[f"{sub.prefix}_{field_name}"] = (value.item() if isinstance(value, np.generic)
                                                     else value)
    return out


def fill_parameters(parameters, flat: dict) -> None:
    """Inverse of `flat_parameters`: set the container fields (with units) from a flat dict."""
    import astropy.units as u

    for _, sub in parameters.items():
        if not hasattr(sub, "fields"):
            continue
        for field_name, field in sub.fields.items():
            key = f"{sub.prefix}_{field_name}"
            if key in flat:
                value = flat[key]
                sub[field_name] = value * u.Unit(field.unit) if field.unit is not None else value


class _CtapipeStager(Stager):
    config = Param(dict, {}, "ctapipe configuration (traitlets) mapping for the component")

    def setup(self) -> None:
        from astropy.utils import iers
        from traitlets.config import Config

        iers.conf.auto_download = False
        self.subarray = ctapipe_subarray(self.context["subarray"])
        self._config = Config(self.config or {})
        self.component = self.make_component()

    def make_component(self):
        raise NotImplementedError


class CtapipeCalibrator(_CtapipeStager):
    """ctapipe CameraCalibrator: R1 ``waveform`` -> ``image``, ``peak_time`` (float32)."""

    image_extractor_type = Param(str, "NeighborPeakWindowSum", "ctapipe ImageExtractor name")
    drop_waveform = Param(bool, True, "remove the waveform after extraction")

    def make_component(self):
        from ctapipe.calib import CameraCalibrator

        return CameraCalibrator(subarray=self.subarray, config=self._config,
                                image_extractor_type=self.image_extractor_type)

    def process(self, event: dict) -> dict:
        ev = array_event(event, self.context.get("calibration"))
        self.component(ev)
        for tel_id, tel in event["tels"].items():
            if tel_id not in ev.dl1.tel or ev.dl1.tel[tel_id].image is None:
                continue
            tel["image"] = np.asarray(ev.dl1.tel[tel_id].image, dtype=np.float32)
            tel["peak_time"] = np.asarray(ev.dl1.tel[tel_id].peak_time, dtype=np.float32)
            if self.drop_waveform:
                tel.pop("waveform", None)
        return event


class CtapipeImageProcessor(_CtapipeStager):
    """ctapipe ImageProcessor: cleaning and image parameters -> ``mask`` and flat ``params``."""

    def make_component(self):
        from ctapipe.image import ImageProcessor

        return ImageProcessor(subarray=self.subarray, config=self._config)

    def process(self, event: dict) -> dict:
        ev = array_event(event, self.context.get("calibration"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.component(ev)
        for tel_id, tel in event["tels"].items():
            if tel_id in ev.dl1.tel:
                dl1 = ev.dl1.tel[tel_id]
                tel["mask"] = np.asarray(dl1.image_mask, dtype=bool)
                tel["params"] = flat_parameters(dl1.parameters)
        return event


class CtapipeShowerProcessor(_CtapipeStager):
    """ctapipe ShowerProcessor (default HillasReconstructor) on flat ``params`` -> ``dl2``."""

    reconstructor = Param(str, "HillasReconstructor", "ctapipe reconstructor to report in dl2")

    def make_component(self):
        from ctapipe.reco import ShowerProcessor

        return ShowerProcessor(subarray=self.subarray, config=self._config,
                               reconstructor_types=[self.reconstructor])

    def process(self, event: dict) -> dict:
        from ctapipe.containers import DL1CameraContainer, ImageParametersContainer

        ev = array_event({**event, "tels": {t: {k: v for k, v in tel.items() if k != "image"}
                                            for t, tel in event["tels"].items()}})
        for tel_id, tel in event["tels"].items():
            if "params" in tel:
                parameters = ImageParametersContainer()
                fill_parameters(parameters, tel["params"])
                ev.dl1.tel[tel_id] = DL1CameraContainer(parameters=parameters)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.component(ev)
        geom = ev.dl2.stereo.geometry[self.reconstructor]
        event["dl2"] = {
            "alt": geom.alt.to_value("deg"), "az": geom.az.to_value("deg"),
            "alt_uncert": geom.alt_uncert.to_value("deg"), "az_uncert": geom.az_uncert.to_value("deg"),
            "core_x": geom.core_x.to_value("m"), "core_y": geom.core_y.to_value("m"),
            "core_tilted_x": geom.core_tilted_x.to_value("m"),
            "core_tilted_y": geom.core_tilted_y.to_value("m"),
            "h_max": geom.h_max.to_value("m"), "is_valid": bool(geom.is_valid),
            "telescopes": np.asarray(geom.telescopes if geom.telescopes is not None else [],
                                     dtype=np.int64),
        }
        event["dl2"]["multiplicity"] = len(event["dl2"]["telescopes"])
        return event


class CallableStager(Stager):
    """Any ``module:function`` applied to one field: ``out = func(value, **kwargs)``."""

    func = Param(str, REQUIRED, "the function, as module:function")
    field_in = Param(str, REQUIRED, "field read (per telescope: a key of tels[tel_id])")
    field_out = Param(str, REQUIRED, "field written with the function's result")
    per_telescope = Param(bool, True, "apply to every tels[tel_id] (else to the event)")
    kwargs = Param(dict, {}, "extra keyword arguments for the function")

    def setup(self) -> None:
        self._func = import_object(self.func)

    def process(self, event: dict) -> dict:
        if not hasattr(self, "_func"):
            self.setup()
        targets = event["tels"].values() if self.per_telescope else [event]
        for target in targets:
            if self.field_in in target:
                target[self.field_out] = self._func(target[self.field_in], **self.kwargs)
        return event
