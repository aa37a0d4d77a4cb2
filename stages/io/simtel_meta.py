"""What ctapipe's SimTelEventSource reports about a run, read from the sim_telarray file's headers.

The simtel source's context names its input file (``context["provenance"]["input_files"]``); the
HDF5 writers call `read_simulation_info` on it to fill the configuration tables the way
``ctapipe-process`` does: one scan of the file's top-level objects (no waveform is decoded):

- ``run``: ctapipe's ``SimulationConfigContainer`` fields from the MC run header;
- ``observation``: time (unix s) and direction (az, alt rad) of the run header, for the
  scheduling and observation blocks;
- ``shower_distribution``: the histogram of thrown showers (sim_telarray histogram id 6), or None
  when the file ends before its histograms (a truncated file, as ctapipe warns);
- ``triggers``: per event id, the central trigger time (unix s, ns), the triggered telescopes with
  their trigger times (ns relative to the central trigger) and trigger type masks, and the
  ``starting_grammage`` (g/cm2) of the event's shower (its MC shower block, as ctapipe reads it).
"""

from __future__ import annotations

import warnings

import numpy as np

HALF_PI, HALF_PI_MAX = 0.5 * np.pi, (1 + 1e-6) * 0.5 * np.pi
SHOWER_HISTOGRAM_ID = 6


def clip_altitude(alt: float) -> float:
    """ctapipe's _clip_altitude_if_close."""
    if HALF_PI < alt < HALF_PI_MAX:
        return HALF_PI
    if -HALF_PI_MAX < alt < -HALF_PI:
        return -HALF_PI
    return float(alt)


def run_config(mc: dict, run_number: int) -> dict:
    """SimulationConfigContainer fields (ctapipe units: TeV, rad, deg, m, uT, nm) of an MC run header."""
    return {
        "run_number": run_number, "corsika_version": mc["shower_prog_vers"],
        "simtel_version": mc["detector_prog_vers"],
        "energy_range_min": mc["E_range"][0], "energy_range_max": mc["E_range"][1],
        "prod_site_B_total": mc["B_total"], "prod_site_B_declination": mc["B_declination"],
        "prod_site_B_inclination": mc["B_inclination"], "prod_site_alt": mc["obsheight"],
        "spectral_index": mc["spectral_index"], "shower_prog_start": mc["shower_prog_start"],
        "shower_prog_id": mc["shower_prog_id"], "detector_prog_start": mc["detector_prog_start"],
        "detector_prog_id": mc["detector_prog_id"], "n_showers": mc["n_showers"],
        "shower_reuse": mc["n_use"], "max_alt": clip_altitude(mc["alt_range"][1]),
        "min_alt": clip_altitude(mc["alt_range"][0]), "max_az": mc["az_range"][1],
        "min_az": mc["az_range"][0], "diffuse": mc["diffuse"],
        "max_viewcone_radius": mc["viewcone"][1], "min_viewcone_radius": mc["viewcone"][0],
        "max_scatter_range": mc["core_range"][1], "min_scatter_range": mc["core_range"][0],
        "core_pos_mode": mc["core_pos_mode"], "atmosphere": mc["atmosphere"],
        "corsika_iact_options": mc["corsika_iact_options"],
        "corsika_low_E_model": mc["corsika_low_E_model"],
        "corsika_high_E_model": mc["corsika_high_E_model"],
        "corsika_bunchsize": mc["corsika_bunchsize"], "corsika_wlen_min": mc["corsika_wlen_min"],
        "corsika_wlen_max": mc["corsika_wlen_max"],
        "corsika_low_E_detail": mc["corsika_low_E_detail"],
        "corsika_high_E_detail": mc["corsika_high_E_detail"],
    }


def shower_distribution(hist: dict) -> dict:
    """ctapipe's SimulatedShowerDistribution of the thrown-shower histogram (energy in TeV)."""
    return {
        "hist_id": int(hist["id"]), "n_entries": int(hist["entries"]),
        "bins_core_dist": np.linspace(hist["lower_x"], hist["upper_x"], hist["n_bins_x"] + 1),
        "bins_energy": 10 ** np.linspace(hist["lower_y"], hist["upper_y"], hist["n_bins_y"] + 1),
        "histogram": np.asarray(hist["data"], dtype=np.float32),
    }


def _trigger(info: dict) -> dict:
    return {"gps_time": tuple(int(v) for v in info["gps_time"]),
            "tels": [int(t) for t in info["triggered_telescopes"]],
            "times_ns": [float(t) for t in info["trigger_times"]],
            "type_masks": [int(m) for m in info["teltrg_type_mask"]]}


def read_simulation_info(path) -> dict:
    """{"run", "observation", "shower_distribution", "triggers"} of a sim_telarray file (see above)."""
    from eventio import EventIOFile
    from eventio.simtel import objects as so

    out = {"run": None, "observation": None, "shower_distribution": None, "triggers": {}}
    header, depth_start = None, np.nan
    try:
        for obj in EventIOFile(str(path)):
            if isinstance(obj, so.RunHeader):
                header = obj.parse()
                az, alt = header["direction"]
                out["observation"] = {"obs_id": int(header["run"]), "time_unix": float(header["time"]),
                                      "az": float(az), "alt": float(alt),
                                      "tracking_mode": int(header["tracking_mode"])}
            elif isinstance(obj, so.MCRunHeader) and header is not None:
                out["run"] = run_config(obj.parse(), int(header["run"]))
            elif isinstance(obj, so.MCShower):
                depth_start = float(obj.parse()["depth_start"])
            elif isinstance(obj, so.ArrayEvent):
                for child in obj:
                    if isinstance(child, so.TriggerInformation):
                        trigger = dict(_trigger(child.parse()), starting_grammage=depth_start)
                        out["triggers"][int(obj.header.id)] = trigger
                        break
            elif type(obj).__name__ == "Histograms":
                hist = next((h for h in obj.parse() if h["id"] == SHOWER_HISTOGRAM_ID), None)
                if hist is not None:
                    out["shower_distribution"] = shower_distribution(hist)
    except Exception as exc:  # noqa: BLE001 - eventio raises many types on a truncated file
        warnings.warn(f"{path}: {exc}; simulation information read up to there", stacklevel=2)
    return out
