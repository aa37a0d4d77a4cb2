"""One sim_telarray array event, as eventio parses it, into the flow event layout (R1, as ctapipe).

`convert_event` is the whole recipe, a pure function of the array event (the dict eventio's
``SimTelFile`` yields, or `stages.io.simtel_parser.parse_raw_event` rebuilds) and of the run record
(`run_record`: what the file's header says once, wire-safe so that it can travel in the context):
pedestal per sample subtracted, scaled by the file's dc_to_pe, and for physics events the gain
selected like ctapipe's ``ThresholdGainSelector`` (low gain where any high-gain R0 sample exceeds
4000 counts), giving shape (1, n_pix, n_samples); calibration events keep all gains. It returns
``None`` when the waveforms exceed ``max_event_mb``.
"""

from __future__ import annotations

import numpy as np

GAIN_THRESHOLD = 4000.0  # ctapipe ThresholdGainSelector default, R0 counts of the high gain
MISSING_IMAGE_BRIGHTNESS_LIMIT = 1_000_000
HALF_PI, HALF_PI_MAX = 0.5 * np.pi, (1 + 1e-6) * 0.5 * np.pi


def clip_altitude(alt: float) -> float:
    """Round |alt| a hair above pi/2 (float32 rounding in sim_telarray) to pi/2, as ctapipe."""
    if HALF_PI < alt < HALF_PI_MAX:
        return HALF_PI
    if -HALF_PI_MAX < alt < -HALF_PI:
        return -HALF_PI
    return alt


def tracking_pointing(tracking: dict) -> dict:
    """A telescope's pointing (rad) from its tracking record: corrected where given, as ctapipe."""
    az, alt = tracking.get("azimuth_cor", np.nan), tracking.get("altitude_cor", np.nan)
    az = tracking["azimuth_raw"] if np.isnan(az) else az
    alt = tracking["altitude_raw"] if np.isnan(alt) else alt
    return {"alt": float(clip_altitude(alt)), "az": float(az)}


def select_gain(r0: np.ndarray, threshold: float = GAIN_THRESHOLD) -> np.ndarray:
    """ctapipe's ThresholdGainSelector: int8 (n_pix,), 1 (low) where a high-gain sample > threshold."""
    if r0.shape[0] == 1:
        return np.zeros(r0.shape[1], dtype=np.int8)
    return (r0[0] > threshold).any(axis=1).astype(np.int8)


def r1_waveform(r0, pedestal, factor, gain_selection: bool):
    """R1 waveform float32 and selected gain (or None), ``apply_simtel_r1_calibration``'s recipe."""
    n_pix = r0.shape[-2]
    r1 = (r0 - pedestal[..., np.newaxis]) * factor[..., np.newaxis]
    if not gain_selection:
        return r1.astype(np.float32), None
    selected = select_gain(r0)
    return r1[np.newaxis, selected, np.arange(n_pix)].astype(np.float32), selected


def has_true_image(history) -> bool:
    """Whether the file stores true photo-electron images (ctapipe's ``_has_true_image``)."""
    lines, tel_lines, tel = [], {}, 0
    for _, raw in history:
        line = raw.decode("utf-8").strip()
        if line.startswith("# Telescope-specific configuration follows"):
            tel += 1
        (tel_lines.setdefault(tel, []) if tel else lines).append(line)
    if lines and "merge_simtel" in lines[0]:
        return False
    save_photons, store_pe = 0, -1
    for line in lines:
        if line.lower().startswith("save_photons"):
            save_photons = int(line.split()[1])
        if line.lower().startswith("store_photoelectrons"):
            store_pe = int(line.split()[1])
    if save_photons & 0b10 or store_pe > 0:
        return True
    return any(int(line.split()[1]) > 0 for cfg in tel_lines.values() for line in cfg
               if "store_photoelectrons" in line.lower())


def pointing(header) -> dict:
    """Array pointing (rad) of a run header: fixed tracking, else NaN."""
    if header["tracking_mode"] == 0:
        az, alt = header["direction"]
        return {"alt": float(alt), "az": float(az)}
    return {"alt": float("nan"), "az": float("nan")}


def run_record(f, context: dict) -> dict:
    """What `convert_event` needs of an open SimTelFile and of its published context; plain values
    (lists, int keys, arrays) so that it travels in a context; `prepared_run` makes it fast."""
    try:
        true_images = has_true_image(f.history)
    except Exception:  # an unreadable history: keep what the file holds
        true_images = True
    calibrated = sorted(int(t) for t in context["calibration"])
    return {"obs_id": int(f.header["run"]), "pointing": pointing(f.header),
            "true_images": bool(true_images),
            "n_tels_original": len(f.header["tel_id"]),
            "tel_index": {int(t): i for i, t in enumerate(f.header["tel_id"])},
            "tel_ids": sorted(int(t) for t in context["subarray"]["tels"]),
            "calibrated": calibrated,
            "disabled": {int(t): np.asarray(d["disabled_pixels"]["HV_disabled"])
                         for t, d in f.telescope_descriptions.items()}}


def prepared_run(record: dict) -> dict:
    """A `run_record` with its telescope lists as sets (what `convert_event` reads)."""
    return {**record, "tel_ids": set(record["tel_ids"]), "calibrated": set(record["calibrated"])}


def event_calibration(array_event: dict, tel_id: int, shape, disabled) -> dict:
    """Time shift and disabled pixels (``HV_disabled`` ids) of a telescope the context lacks.

    sim_telarray may write a telescope's laser calibration after the first event (gamma_test holds
    such telescopes); ctapipe then takes it from the event, and so does ChargeExtraction.
    """
    outliers = np.zeros(shape, dtype=bool)
    outliers[:, disabled] = True
    return {"time_shift_ns": np.asarray(array_event["laser_calibrations"][tel_id]["tm_calib"],
                                        dtype=np.float64),
            "outlier_mask": outliers}


def simulation(array_event: dict) -> dict:
    """The true shower of a physics event."""
    shower, mc_event = array_event["mc_shower"], array_event["mc_event"]
    return {
        "energy": float(shower["energy"]),
        "alt": float(clip_altitude(shower["altitude"])),
        "az": float(shower["azimuth"]),
        "core_x": float(mc_event["xcore"]),
        "core_y": float(mc_event["ycore"]),
        "h_first_int": float(shower["h_first_int"]),
        "x_max": float(shower["xmax"]),
        "shower_primary_id": int(shower["primary_id"]),
    }


def convert_event(array_event: dict, event_id: int, run: dict, max_event_mb: float) -> dict | None:
    """The flow event (docs/event-schema.md) of one eventio array event; None if too large."""
    is_physics = array_event["type"] == "data"
    event = {"obs_id": run["obs_id"], "event_id": event_id, "pointing": dict(run["pointing"])}
    if is_physics and array_event.get("mc_shower") is not None:
        event["simulation"] = simulation(array_event)
    triggered = set(int(t) for t in array_event["trigger_information"]["triggered_telescopes"])
    sums = (array_event.get("photoelectron_sums") or {}).get(
        "n_pe", np.full(run["n_tels_original"], np.nan))
    tels, n_bytes = {}, 0
    for tel_id, tel_event in array_event["telescope_events"].items():
        if tel_id not in triggered or tel_id not in run["tel_ids"]:
            continue
        tel, size = convert_telescope(array_event, tel_id, tel_event, run, is_physics, sums)
        n_bytes += size
        if tel is not None:
            tels[int(tel_id)] = tel
    if n_bytes > max_event_mb * 2**20:
        return None
    event["tels"] = tels
    return event


def convert_telescope(array_event: dict, tel_id: int, tel_event: dict, run: dict,
                      is_physics: bool, sums) -> tuple[dict | None, int]:
    """One telescope's R1 event (None: a truncated true image ctapipe skips) and its bytes."""
    r0 = tel_event.get("adc_samples")
    if r0 is None:
        r0 = tel_event["adc_sums"][:, :, np.newaxis]
    cam_mon = array_event["camera_monitorings"][tel_id]
    pedestal = cam_mon["pedestal"] / cam_mon["n_ped_slices"]
    factor = array_event["laser_calibrations"][tel_id]["calib"]
    waveform, selected = r1_waveform(r0, pedestal, factor, gain_selection=is_physics)
    tel = {"waveform": waveform}
    tracking = (array_event.get("tracking_positions") or {}).get(tel_id)
    if tracking is not None:  # per telescope, as ctapipe's monitoring.tel[tid].pointing
        tel["pointing"] = tracking_pointing(tracking)
    if tel_id not in run["calibrated"]:
        tel["calibration"] = event_calibration(array_event, tel_id, r0.shape[:2],
                                              run["disabled"][tel_id])
    if selected is not None:
        tel["selected_gain_channel"] = selected
    true_image = ((array_event.get("photoelectrons") or {}).get(tel_id - 1) or {}).get(
        "photoelectrons")
    if run["true_images"] and true_image is None:
        if sums[run["tel_index"][tel_id]] > MISSING_IMAGE_BRIGHTNESS_LIMIT:
            return None, waveform.nbytes  # ctapipe skips such truncated telescope events
        true_image = np.full(r0.shape[1], -1, dtype=np.int32)
    if true_image is not None:
        tel["true_image"] = np.asarray(true_image, dtype=np.int32)
    return tel, waveform.nbytes
