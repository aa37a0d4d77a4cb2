"""ctapipe's configuration and service tables and the file's reference metadata, from flow's values.

- `write_instrument`: ``/configuration/instrument/...`` (``SubarrayDescription.to_hdf``).
- `write_simulation_run`: ``/configuration/simulation/run`` from a ``run`` mapping of
  ``SimulationConfigContainer`` fields (`stages.io.simtel_meta`, `stages.io.toy_simconfig`).
- `write_observation`: ``/configuration/observation/{scheduling,observation}_block`` as ctapipe's
  SimTelEventSource fills them for a simulated run (one SB and one OB of the run's obs_id).
- `write_pointing`: ``/configuration/telescope/pointing/tel_NNN`` (the first pointing of each
  telescope, as ctapipe's DataWriter writes it for fixed pointing).
- `write_shower_distribution`: ``/simulation/service/shower_distribution``.
- `write_product_metadata`: the root's ``CTA ...`` attributes (``ctapipe.io.metadata``).
"""

from __future__ import annotations

import getpass
import platform
import uuid
import warnings
from datetime import UTC, datetime

import numpy as np
import tables

from .ctapipe_layout import (
    DATA_MODEL_VERSION,
    fill,
    instrument_tables,
    rows,
    with_strings,
    write_table,
)

RUN = "configuration/simulation/run"
SB = "configuration/observation/scheduling_block"
OB = "configuration/observation/observation_block"
POINTING = "configuration/telescope/pointing/tel_NNN"
SHOWER_DISTRIBUTION = "simulation/service/shower_distribution"
# ctapipe enums: SchedulingBlockType.OBSERVATION, ObservingMode.UNKNOWN, PointingMode.DRIFT,
# ObservationBlockState.COMPLETED_SUCCEDED, CoordinateFrameType.ALTAZ
SB_TYPE_OBSERVATION, OBSERVING_MODE_UNKNOWN, POINTING_MODE_DRIFT = 0, -1, 1
OB_STATE_COMPLETED_SUCCEEDED, FRAME_ALTAZ = 1, 0


def _create(h5, path: str, kind: str, data: np.ndarray, filters, attrs=None) -> None:
    if path not in h5:
        write_table(h5, path, kind, data, attrs=attrs, filters=filters)


def write_instrument(h5: tables.File, subarray: dict, filters) -> None:
    """The instrument tables, unless the file has them already."""
    if "/configuration/instrument/subarray/layout" in h5:
        return
    for path, kind, data, attrs in instrument_tables(subarray):
        write_table(h5, path, kind, data, attrs=attrs, filters=filters)


def write_simulation_run(h5: tables.File, obs_id: int, run: dict, filters) -> None:
    row = fill(rows(RUN, 1), dict(run, obs_id=obs_id))
    if "/" + RUN in h5:
        h5.get_node("/" + RUN).append(row)
    else:
        _create(h5, "/" + RUN, RUN, row, filters)


def mjd_tai(unix_s: float) -> float:
    """MJD (TAI) of a unix time, as ctapipe's writer stores scheduled/actual start times."""
    from astropy.time import Time

    return float(Time(unix_s, format="unix").tai.mjd)


def write_observation(h5: tables.File, observation: dict, filters) -> None:
    obs_id = int(observation["obs_id"])
    sb = with_strings(SB, {"sb_id": [obs_id], "sb_type": [SB_TYPE_OBSERVATION],
                           "producer_id": ["simulation"], "observing_mode": [OBSERVING_MODE_UNKNOWN],
                           "pointing_mode": [POINTING_MODE_DRIFT]})
    start = mjd_tai(observation["time_unix"]) if "time_unix" in observation else np.nan
    ob = with_strings(OB, {
        "obs_id": [obs_id], "sb_id": [obs_id], "producer_id": ["simulation"],
        "state": [OB_STATE_COMPLETED_SUCCEEDED],
        "subarray_pointing_lat": [np.rad2deg(observation["alt"])],
        "subarray_pointing_lon": [np.rad2deg(observation["az"])],
        "subarray_pointing_frame": [FRAME_ALTAZ], "scheduled_duration": [np.nan],
        "scheduled_start_time": [start], "actual_start_time": [start], "actual_duration": [np.nan]})
    for path, kind, data in (("/" + SB, SB, sb), ("/" + OB, OB, ob)):
        if path in h5:
            h5.get_node(path).append(data.astype(h5.get_node(path).dtype))
        else:
            _create(h5, path, kind, data, filters)


def write_pointing(h5: tables.File, pointings: dict, filters) -> None:
    """``pointings``: {(obs_id, tel_id): (az_rad, alt_rad)}, the first of each telescope."""
    for (obs_id, tel_id), (az, alt) in sorted(pointings.items()):
        path = f"/configuration/telescope/pointing/tel_{tel_id:03d}"
        row = fill(rows(POINTING, 1), {"obs_id": obs_id, "tel_id": tel_id,
                                       "telescope_pointing_azimuth": az,
                                       "telescope_pointing_altitude": alt})
        if path in h5:
            h5.get_node(path).append(row)
        else:
            _create(h5, path, POINTING, row, filters)


def write_shower_distribution(h5: tables.File, obs_id: int, dist: dict, filters) -> None:
    shapes = {"bins_energy": np.shape(dist["bins_energy"]),
              "bins_core_dist": np.shape(dist["bins_core_dist"]),
              "histogram": np.shape(dist["histogram"])}
    row = fill(rows(SHOWER_DISTRIBUTION, 1, shapes=shapes), dict(dist, obs_id=obs_id))
    path = "/" + SHOWER_DISTRIBUTION
    if path in h5:
        h5.get_node(path).append(row)
    else:
        _create(h5, path, SHOWER_DISTRIBUTION, row, filters)


def product_metadata(*, activity: str, software_version: str, start: str, data_levels: list[str],
                     subarray_name: str, obs_ids: list[int], is_simulation: bool) -> dict:
    """The ``CTA ...`` reference metadata (ctapipe.io.metadata.Reference) of a flow product."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return {
        "CTA ACTIVITY ID": str(uuid.uuid4()), "CTA ACTIVITY NAME": activity,
        "CTA ACTIVITY SOFTWARE NAME": "flow", "CTA ACTIVITY SOFTWARE VERSION": software_version,
        "CTA ACTIVITY START TIME": start, "CTA ACTIVITY STOP TIME": now,
        "CTA ACTIVITY TYPE": "software", "CTA CONTACT EMAIL": "unknown",
        "CTA CONTACT NAME": _user(), "CTA CONTACT ORGANIZATION": "unknown",
        "CTA INSTRUMENT CLASS": "Other", "CTA INSTRUMENT ID": subarray_name,
        "CTA INSTRUMENT SITE": "Other", "CTA INSTRUMENT SUBTYPE": "unspecified",
        "CTA INSTRUMENT TYPE": "unspecified", "CTA INSTRUMENT VERSION": "unspecified",
        "CTA PROCESS ID": ",".join(str(o) for o in obs_ids), "CTA PROCESS SUBTYPE": "",
        "CTA PROCESS TYPE": "Simulation" if is_simulation else "Observation",
        "CTA PRODUCT CREATION TIME": now, "CTA PRODUCT DATA ASSOCIATION": "Subarray",
        "CTA PRODUCT DATA CATEGORY": "Sim" if is_simulation else "Other",
        "CTA PRODUCT DATA LEVELS": ",".join(data_levels), "CTA PRODUCT DATA MODEL NAME": "ASWG",
        "CTA PRODUCT DATA MODEL URL": "", "CTA PRODUCT DATA MODEL VERSION": DATA_MODEL_VERSION,
        "CTA PRODUCT DESCRIPTION": "flow Data Product (ctapipe data model)",
        "CTA PRODUCT FORMAT": "hdf5", "CTA PRODUCT ID": str(uuid.uuid4()),
        "CTA REFERENCE VERSION": "1",
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return platform.node() or "unknown"


def write_product_metadata(h5: tables.File, meta: dict) -> None:
    with warnings.catch_warnings():  # "CTA ..." are not Python identifiers: fine for attributes
        warnings.simplefilter("ignore", tables.NaturalNameWarning)
        for key, value in meta.items():
            h5.root._v_attrs[key] = value
