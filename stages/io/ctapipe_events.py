"""One event's rows in ctapipe's data model: pure functions from flow event dicts to schema rows.

Each function returns ``(kind, row)`` pairs or a row (a length-1 structured array of the schema kind,
`stages.io.ctapipe_schema`). Units follow ctapipe: angles of DL1 parameters and DL2 in deg, true
shower angles in deg, pointing in rad, distances in m, energies in TeV. Event dicts carry radians for
pointing and truth (docs/event-schema.md).

Columns no step filled keep ctapipe's defaults (NaN, -1): e.g. the uncertainties ctapipe's
HillasReconstructor leaves NaN too (all but ``alt_uncert``/``az_uncert``).
"""

from __future__ import annotations

import numpy as np

from .ctapipe_layout import EVENT_TYPE_SUBARRAY, axis_distances, fill, rows, tel_mask
from .ctapipe_time import trigger_times

SHOWER = "simulation/event/subarray/shower"
PARAMS = "dl1/event/telescope/parameters/tel_NNN"
TRUE_PARAMS = "simulation/event/telescope/parameters/tel_NNN"
IMAGES = "dl1/event/telescope/images/tel_NNN"
GEOMETRY = "dl2/event/subarray/geometry/{algo}"
ENERGY = "dl2/event/subarray/energy/{algo}"
CLASSIFICATION = "dl2/event/subarray/particle_type/{algo}"
# event["simulation"] key -> (ctapipe column, factor to ctapipe's unit)
SIM_FIELDS = {
    "energy": ("true_energy", 1.0), "alt": ("true_alt", np.rad2deg(1.0)),
    "az": ("true_az", np.rad2deg(1.0)), "core_x": ("true_core_x", 1.0),
    "core_y": ("true_core_y", 1.0), "h_first_int": ("true_h_first_int", 1.0),
    "x_max": ("true_x_max", 1.0), "starting_grammage": ("true_starting_grammage", 1.0),
    "shower_primary_id": ("true_shower_primary_id", 1),
}
# event["dl2"] key -> ctapipe ReconstructedGeometryContainer field
GEOMETRY_FIELDS = ("alt", "az", "ang_distance_uncert", "is_valid", "goodness_of_fit",
                   "alt_uncert", "az_uncert", "core_x", "core_y", "core_uncert_x", "core_uncert_y",
                   "core_tilted_x", "core_tilted_y", "core_tilted_uncert_x", "core_tilted_uncert_y",
                   "h_max", "h_max_uncert", "average_intensity")


def ids(event: dict, tel_id: int | None = None) -> dict:
    out = {"obs_id": int(event["obs_id"]), "event_id": int(event["event_id"])}
    if tel_id is not None:
        out["tel_id"] = int(tel_id)
    return out


def shower_row(event: dict, trigger: dict | None = None) -> np.ndarray:
    """The true shower; ``starting_grammage`` from the input file's trigger record when there."""
    sim = dict(event["simulation"])
    if trigger and "starting_grammage" in trigger and "starting_grammage" not in sim:
        sim["starting_grammage"] = trigger["starting_grammage"]
    values = {col: sim[key] * factor for key, (col, factor) in SIM_FIELDS.items() if key in sim}
    return fill(rows(SHOWER, 1), dict(ids(event), **values))


def trigger_rows(event: dict, subarray_ids: list[int], trigger: dict | None,
                 times: tuple | None = None) -> list:
    """Subarray and telescope trigger rows; ``trigger`` from the input file, else the event's tels.

    ``times``: the trigger's (central time, {tel_id: time}) when already converted (one call of
    `stages.io.ctapipe_time.trigger_times` for a whole run), else converted here.
    Without a recorded trigger (a toy or DL1 source), the triggered telescopes are those with data
    and the time is the zero timestamp.
    """
    tels = sorted(int(t) for t in (event.get("tels") or {}))
    if trigger:
        triggered = [t for t in trigger["tels"] if t in set(subarray_ids)]
        time, tel_times = times if times is not None else trigger_times({0: trigger})[0]
    else:
        time, triggered, tel_times = np.zeros(2, np.uint32), tels, {}
    out = [("dl1/event/subarray/trigger", fill(
        rows("dl1/event/subarray/trigger", 1, shapes={"tels_with_trigger": (len(subarray_ids),)}),
        dict(ids(event), time=time, tels_with_trigger=tel_mask(triggered, subarray_ids),
             event_type=EVENT_TYPE_SUBARRAY)))]
    for tel_id in triggered:
        tel_time = tel_times.get(tel_id, time)
        out.append(("dl1/event/telescope/trigger", fill(rows("dl1/event/telescope/trigger", 1), dict(
            ids(event, tel_id), time=tel_time, event_type=EVENT_TYPE_SUBARRAY, n_trigger_pixels=-1))))
    return out


def parameter_row(event: dict, tel_id: int, params: dict, kind: str = PARAMS) -> np.ndarray:
    """DL1 parameters (or, with ``kind=TRUE_PARAMS``, the ``true_*`` ones of the true image)."""
    return fill(rows(kind, 1), dict(params, **ids(event, tel_id)))


def image_row(event: dict, tel_id: int, tel: dict) -> np.ndarray:
    """DL1 image, peak_time (zeros if none) and cleaning mask (none set if not cleaned)."""
    image = np.asarray(tel["image"], dtype=np.float32)
    row = rows(IMAGES, 1, shapes={k: image.shape for k in ("image", "peak_time", "image_mask")})
    return fill(row, dict(ids(event, tel_id), image=image, is_valid=True,
                          peak_time=tel.get("peak_time", np.zeros_like(image)),
                          image_mask=tel.get("mask", np.zeros(len(image), bool))))


def true_image_row(event: dict, tel_id: int, tel: dict, with_image: bool = False) -> np.ndarray:
    """true_image_sum (-1 without a true image); with ``with_image`` also the int32 true_image."""
    true_image = tel.get("true_image")
    total = int(np.sum(true_image)) if true_image is not None else -1
    row = fill(rows("simulation/event/telescope/images/tel_NNN", 1),
               dict(ids(event, tel_id), true_image_sum=total))
    if with_image and true_image is None and "image" in tel:  # as ctapipe: -1 where unknown
        true_image = np.full(len(tel["image"]), -1, dtype=np.int32)
    if not with_image or true_image is None:
        return row
    image = np.asarray(true_image, dtype=np.int32)
    out = np.zeros(1, dtype=row.dtype.descr + [("true_image", "<i4", image.shape)])
    for name in row.dtype.names:
        out[name] = row[name]
    out["true_image"] = image
    return out


def impact_rows(event: dict, subarray: dict, kind: str, column: str, core_x, core_y, alt_rad,
                az_rad, algo: str = "", uncert=None) -> list[tuple[int, np.ndarray]]:
    """(tel_id, row) of the distance of each telescope with data to a shower axis (true or fitted).

    ``uncert``: the uncertainty column's value (ctapipe: 0 for the true impact, NaN for fits).
    """
    tel_ids = sorted(int(t) for t in (event.get("tels") or {}))
    if not tel_ids:
        return []
    positions = np.array([subarray["tels"][t]["position"] for t in tel_ids])
    dist = axis_distances(positions, core_x, core_y, alt_rad, az_rad)
    return [(t, fill(rows(kind, 1, algo), dict(ids(event, t), **{column: d,
                                                                 f"{column}_uncert": uncert})))
            for t, d in zip(tel_ids, dist, strict=True)]


def geometry_row(event: dict, algo: str, subarray_ids: list[int]) -> np.ndarray:
    dl2 = event["dl2"]
    values = {f"{algo}_{k}": dl2[k] for k in GEOMETRY_FIELDS if k in dl2}
    used = dl2.get("telescopes", []) if dl2.get("is_valid") else []  # ctapipe: none if invalid
    values[f"{algo}_telescopes"] = tel_mask(used, subarray_ids)
    return fill(rows(GEOMETRY, 1, algo, {f"{algo}_telescopes": (len(subarray_ids),)}),
                dict(ids(event), **values))


def energy_row(event: dict, algo: str, subarray_ids: list[int]) -> np.ndarray:
    dl2 = event["dl2"]
    valid = dl2.get("energy_valid", bool(np.isfinite(dl2["energy"])))
    return fill(rows(ENERGY, 1, algo, {f"{algo}_telescopes": (len(subarray_ids),)}), dict(
        ids(event), **{f"{algo}_energy": dl2["energy"], f"{algo}_is_valid": valid,
                       f"{algo}_energy_uncert": dl2.get("energy_uncert"),
                       f"{algo}_telescopes": tel_mask(dl2.get("energy_telescopes", []), subarray_ids)}))


def classification_row(event: dict, algo: str, subarray_ids: list[int]) -> np.ndarray:
    dl2 = event["dl2"]
    valid = dl2.get("gammaness_valid", bool(np.isfinite(dl2["gammaness"])))
    return fill(rows(CLASSIFICATION, 1, algo, {f"{algo}_telescopes": (len(subarray_ids),)}), dict(
        ids(event), **{f"{algo}_prediction": dl2["gammaness"], f"{algo}_is_valid": valid,
                       f"{algo}_telescopes": tel_mask(dl2.get("gammaness_telescopes", []),
                                                      subarray_ids)}))
