"""Models trained by ctapipe's tools, applied in the stream: energy, gammaness and disp geometry.

Contract: `telescope_table` turns one event into the table of its telescope events that
``ctapipe-apply-models`` builds with ``TableLoader`` (DL1 parameters, the stereo geometry and
the telescopes' impact distances, trigger, with ctapipe's units); `apply_reconstructor` runs one
ctapipe reconstructor on it exactly as the tool does (``predict_table`` per telescope type, then the
model's ``stereo_combiner``) and returns the array-event predictions; `fill_dl2` puts them in the
event's ``dl2``.

`ApplyModels` is the step: it loads the model files that ``ctapipe-train-energy-regressor``,
``ctapipe-train-particle-classifier`` and ``ctapipe-train-disp-reconstructor`` wrote, with ctapipe's
own loader (``Reconstructor.read``: the files are ctapipe pickles), so this step needs ctapipe
(``pip install flow-iact[ctapipe]``). Results equal ``ctapipe-apply-models`` on the same DL2 file
(tests/test_stages_models.py). The DL2 writer names the tables after the models (their prefix).

Telescopes that triggered are those with data in the event (as the writer stores them for sources
without a trigger record); features computed from other inputs than these tables are not supported.
"""

from __future__ import annotations

import numpy as np

from flow.errors import DataError
from flow.graph.params import Param
from flow.graph.step import Stager

from .io.ctapipe_schema import column_units, table_dtype

POINTING_UNITS = {"subarray_pointing_lat": "deg", "subarray_pointing_lon": "deg",
                  "telescope_pointing_altitude": "rad", "telescope_pointing_azimuth": "rad"}
GEOMETRY_FIELDS = ("alt", "az", "ang_distance_uncert", "is_valid", "core_x", "core_y", "h_max",
                   "average_intensity", "alt_uncert", "az_uncert")


def telescope_table(event: dict, subarray_ids: list[int], geometry_algorithm: str, units: dict):
    """astropy Table, one row per telescope with ``params``, in ctapipe-apply-models' columns."""
    from astropy.table import Table

    from .io.ctapipe_layout import tel_mask

    tels = sorted(t for t, tel in (event.get("tels") or {}).items() if tel.get("params"))
    dl2, algo = event.get("dl2") or {}, geometry_algorithm
    cols: dict[str, list] = {"obs_id": [], "event_id": [], "tel_id": []}
    names = [n for n in units["params"] if n not in cols]
    for name in names:
        cols[name] = []
    for tel_id in tels:
        params = event["tels"][tel_id]["params"]
        cols["obs_id"].append(event["obs_id"])
        cols["event_id"].append(event["event_id"])
        cols["tel_id"].append(tel_id)
        for name in names:
            cols[name].append(params.get(name, np.nan))
    n = len(tels)
    mask = tel_mask(sorted(event.get("tels") or {}), subarray_ids)
    cols["tels_with_trigger"] = [mask] * n
    for key in ("alt", "az", "core_x", "core_y", "h_max", "average_intensity", "is_valid"):
        cols[f"{algo}_{key}"] = [dl2.get(key, np.nan if key != "is_valid" else False)] * n
    used = dl2.get("telescopes", []) if dl2.get("is_valid") else []
    cols[f"{algo}_telescopes"] = [tel_mask(used, subarray_ids)] * n
    pointing = event.get("pointing") or {"alt": np.nan, "az": np.nan}
    cols["subarray_pointing_lat"] = [np.rad2deg(pointing["alt"])] * n  # observation block, deg
    cols["subarray_pointing_lon"] = [np.rad2deg(pointing["az"])] * n
    cols["subarray_pointing_frame"] = [0] * n  # CoordinateFrameType.ALTAZ
    cols["telescope_pointing_altitude"] = [(event["tels"][t].get("pointing") or pointing)["alt"]
                                           for t in tels]
    cols["telescope_pointing_azimuth"] = [(event["tels"][t].get("pointing") or pointing)["az"]
                                          for t in tels]
    table = Table(cols)
    for name, dtype in units["dtypes"].items():  # the file's dtypes: what ctapipe's tool reads
        if name in table.colnames:
            table[name] = table[name].astype(dtype)
    for name, unit in {**units["params"], **units["geometry"], **POINTING_UNITS}.items():
        if name in table.colnames and unit:
            table[name].unit = unit
    return table


def add_impact(table, event: dict, positions: dict, geometry_algorithm: str) -> None:
    """``<algo>_tel_impact_distance`` (m) of each row's telescope to the fitted axis."""
    from .io.ctapipe_layout import axis_distances

    dl2 = event.get("dl2") or {}
    pos = np.array([positions[t] for t in table["tel_id"]]).reshape(-1, 3)
    dist = axis_distances(pos, dl2.get("core_x", np.nan), dl2.get("core_y", np.nan),
                          np.deg2rad(dl2.get("alt", np.nan)), np.deg2rad(dl2.get("az", np.nan)))
    table[f"{geometry_algorithm}_tel_impact_distance"] = dist
    table[f"{geometry_algorithm}_tel_impact_distance"].unit = "m"


def apply_reconstructor(reconstructor, table) -> dict:
    """{property name: one-row stereo Table} of ctapipe's reconstructor on a telescope table."""
    from astropy.table import vstack

    parts = []
    by_type: dict = {}  # one model per telescope type: one predict call per type, not per telescope
    for i, tel_id in enumerate(table["tel_id"]):
        by_type.setdefault(reconstructor.subarray.tel[int(tel_id)], []).append(i)
    for tel_type, index in by_type.items():
        rows = table[index]
        predictions = reconstructor.predict_table(tel_type, rows)
        for prediction in predictions.values():
            for col in prediction.colnames:
                rows[col] = prediction[col]
        parts.append(rows)
    stereo = vstack(parts) if len(parts) > 1 else parts[0]
    stereo = stereo[np.argsort(stereo["tel_id"], kind="stable")]  # tel_id order, as the tool
    combiner = reconstructor.stereo_combiner
    return {str(combiner.property): combiner.predict_table(stereo)}


def fill_dl2(dl2: dict, prop: str, prefix: str, row, subarray_ids: list[int]) -> None:
    """Put one array event's stereo prediction (``row``, one Table row) into ``dl2``."""
    def value(col):
        v = row[f"{prefix}_{col}"]
        return float(getattr(v, "value", v)) if np.ndim(v) == 0 else v

    name = f"{prefix}_telescopes"
    telescopes = [int(t) for t in row[name]] if name in row.colnames else []
    if prop == "energy":
        dl2.update(energy=value("energy"), energy_valid=bool(row[f"{prefix}_is_valid"]),
                   energy_uncert=value("energy_uncert"), energy_algorithm=prefix,
                   energy_telescopes=telescopes)
    elif prop == "particle_type":
        dl2.update(gammaness=value("prediction"), gammaness_valid=bool(row[f"{prefix}_is_valid"]),
                   classification_algorithm=prefix, gammaness_telescopes=telescopes)
    elif prop == "geometry":
        geo = {k: value(k) for k in GEOMETRY_FIELDS if f"{prefix}_{k}" in row.colnames}
        geo["is_valid"] = bool(row[f"{prefix}_is_valid"])
        geo["telescopes"] = telescopes
        dl2.setdefault("geometries", {})[prefix] = geo


class ApplyModels(Stager):
    """ctapipe-trained models (energy, particle type, disp) on each event: see module docstring."""

    models = Param(list, [], "model files written by ctapipe's train tools (.pkl), applied in order")
    geometry_algorithm = Param(str, "HillasReconstructor", "the stereo geometry the models use")

    def setup(self) -> None:
        try:
            from ctapipe.reco import Reconstructor
        except ImportError as exc:
            raise ImportError("ApplyModels needs ctapipe (pip install flow-iact[ctapipe]) to read "
                              "ctapipe's model files") from exc
        self._reconstructors = []
        for path in self.models:
            try:
                self._reconstructors.append(Reconstructor.read(path))
            except Exception as exc:  # noqa: BLE001 - joblib/pickle raise many types
                raise DataError(f"ApplyModels: cannot read model file {path}: {exc}") from exc
        subarray = self.context["subarray"]
        self._ids = sorted(subarray["tels"])
        self._positions = {t: np.asarray(tel["position"]) for t, tel in subarray["tels"].items()}
        algo = self.geometry_algorithm
        kinds = [("dl1/event/telescope/parameters/tel_NNN", ""),
                 ("dl2/event/subarray/geometry/{algo}", algo),
                 ("configuration/observation/observation_block", ""),
                 ("configuration/telescope/pointing/tel_NNN", "")]
        dtypes = {}
        for kind, name in kinds:
            dt = table_dtype(kind, name)
            dtypes.update({c: dt[c].base for c in dt.names
                           if not dt[c].shape and c not in ("obs_id", "event_id", "tel_id")})
        self._units = {"params": column_units(kinds[0][0]),
                       "geometry": column_units(kinds[1][0], algo), "dtypes": dtypes}

    def process(self, event: dict) -> dict:
        table = telescope_table(event, self._ids, self.geometry_algorithm, self._units)
        if len(table) == 0:
            return event
        add_impact(table, event, self._positions, self.geometry_algorithm)
        dl2 = event.setdefault("dl2", {})
        for reconstructor in self._reconstructors:
            for prop, stereo in apply_reconstructor(reconstructor, table).items():
                if len(stereo):
                    fill_dl2(dl2, prop, reconstructor.prefix, stereo[0], self._ids)
        return event
