"""HDF5 output in ctapipe's DL1/DL2 layout (PyTables), buffered, compressed and resumable.

Layout (where it overlaps ctapipe 0.28's ``DataWriter``, same paths and column names)::

    /dl1/event/telescope/parameters/tel_NNN   obs_id, event_id, tel_id, hillas_intensity, ...
    /dl1/event/telescope/images/tel_NNN       obs_id, event_id, tel_id, image, peak_time, image_mask
    /simulation/event/subarray/shower         obs_id, event_id, true_energy, true_alt, true_az, ...
    /simulation/event/telescope/images/tel_NNN  obs_id, event_id, tel_id, true_image
    /dl2/event/subarray/geometry/<algo>       obs_id, event_id, <algo>_alt, <algo>_az, ... (deg, m)
    /dl2/event/subarray/energy/<algo>         obs_id, event_id, <algo>_energy, <algo>_is_valid
    /dl2/event/subarray/classification/<algo> obs_id, event_id, <algo>_prediction, <algo>_is_valid
    /configuration/flow/context               the producers' context["subarray"], see below
    /configuration/provenance/runs            one row per run: start/stop, versions, input files
    /flow/keys                                flow key of every event held (for resume)

Units are column attributes as ctapipe's HDF5TableWriter writes them
(``CTAFIELD_{pos}_TRANSFORM = "quantity"``, ``CTAFIELD_{pos}_UNIT``), so ``ctapipe.io.read_table``
returns Quantity columns. Angles are stored in degrees (event dicts carry radians for pointing and
truth). The context tree: a dict is a group, an array an array, a scalar or string an attribute;
int keys are stored as ``i<key>`` groups (group attribute ``flow_int_keys``); a dict shared by several
telescopes (one camera) is stored once and hard-linked. `read_context` reads it back.

Rows are buffered (``buffer_rows``) and appended in blocks; ``teardown`` flushes and closes, so the
file is valid after any stop. With ``mode: append`` an existing file is extended and ``done_keys()``
returns the keys it already holds.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tables

from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer

FILTERS = tables.Filters(complevel=5, complib="blosc:zstd", shuffle=True)
KEYS_PATH = "/flow/keys"
CONTEXT_PATH = "/configuration/flow/context"
PROVENANCE_PATH = "/configuration/provenance/runs"
PARAMS_PATH = "/dl1/event/telescope/parameters"
IMAGES_PATH = "/dl1/event/telescope/images"
SHOWER_PATH = "/simulation/event/subarray/shower"
TRUE_IMAGES_PATH = "/simulation/event/telescope/images"
_DEG_PARAM = re.compile(r"^hillas_(fov_lon|fov_lat|r|length|width|phi|psi)(_uncertainty)?$")
_SIM_FIELDS = {  # event["simulation"] key -> (column, unit, factor)
    "energy": ("true_energy", "TeV", 1.0), "alt": ("true_alt", "deg", np.rad2deg(1.0)),
    "az": ("true_az", "deg", np.rad2deg(1.0)), "core_x": ("true_core_x", "m", 1.0),
    "core_y": ("true_core_y", "m", 1.0), "h_first_int": ("true_h_first_int", "m", 1.0),
    "x_max": ("true_x_max", "g.cm**-2", 1.0), "shower_primary_id": ("true_shower_primary_id", "", 1),
}
_GEOMETRY = {"alt": "deg", "az": "deg", "alt_uncert": "deg", "az_uncert": "deg", "core_x": "m",
             "core_y": "m", "core_tilted_x": "m", "core_tilted_y": "m", "h_max": "m",
             "is_valid": "", "multiplicity": "", "average_intensity": ""}


def param_unit(name: str) -> str:
    """ctapipe's unit of a flat DL1 parameter column (vounit string, '' if dimensionless)."""
    if _DEG_PARAM.match(name):
        return "deg"
    if name == "timing_slope":
        return "deg**-1"
    if name in ("timing_intercept", "timing_deviation") or name.startswith("peak_time_"):
        return "ns"
    return ""


def versions() -> dict:
    """Software versions for the provenance record."""
    out = {"python": platform.python_version(), "numpy": np.__version__, "tables": tables.__version__}
    for mod in ("flow", "eventio", "ctapipe", "astropy"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            pass
    return out


class TableBuffer:
    """Rows for one HDF5 table, appended in blocks; columns fixed by the first row (or the file)."""

    def __init__(self, h5: tables.File, path: str, units: dict[str, str]):
        self.h5, self.path, self.units, self.rows = h5, path, units, []
        self.table = h5.get_node(path) if path in h5 else None

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if not self.rows:
            return
        if self.table is None:
            self.table = self._create(self.rows[0])
        dtype = self.table.dtype
        block = np.zeros(len(self.rows), dtype=dtype)
        for name in dtype.names:
            column = block[name]
            if np.issubdtype(dtype[name].base, np.floating):
                column[...] = np.nan  # a parameter missing from a row reads as NaN
            for i, row in enumerate(self.rows):
                value = row.get(name)
                if value is not None:
                    column[i] = value
        self.table.append(block)
        self.rows = []

    def _create(self, row: dict) -> tables.Table:
        fields = []
        for name, value in row.items():
            arr = np.asarray(value)
            if arr.dtype.kind in "US":
                arr = arr.astype("S64")
            elif arr.dtype.kind == "f" and arr.ndim == 0:
                arr = arr.astype(np.float64)
            elif arr.dtype.kind in "iu" and arr.ndim == 0 and name not in ("tel_id",):
                arr = arr.astype(np.int64)
            fields.append((name, arr.dtype, arr.shape))
        where, _, name = self.path.rpartition("/")
        table = self.h5.create_table(where, name, np.dtype(fields), createparents=True,
                                     filters=FILTERS, expectedrows=10000)
        for pos, col in enumerate(table.colnames):
            unit = self.units.get(col, "")
            if unit:
                table.attrs[f"CTAFIELD_{pos}_TRANSFORM"] = "quantity"
                table.attrs[f"CTAFIELD_{pos}_UNIT"] = unit
        return table


def fingerprint(value, digest=None) -> str:
    """Content hash of a context value (equal cameras share one stored copy, even after a copy)."""
    top = digest is None
    digest = digest or hashlib.blake2b(digest_size=16)
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            fingerprint(value[key], digest)
    elif isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    else:
        digest.update(repr(value).encode())
    return digest.hexdigest() if top else ""


def write_context(h5: tables.File, path: str, value: dict, _written: dict | None = None) -> None:
    """Store a context mapping as groups/arrays/attributes (hard links for equal sub-dicts)."""
    written = {} if _written is None else _written
    where, _, name = path.rpartition("/")
    key = fingerprint(value)
    if key in written:
        h5.create_hard_link(where, name, written[key], createparents=True)
        return
    group = h5.create_group(where, name, createparents=True)
    written[key] = path
    if any(isinstance(k, int | np.integer) for k in value):
        group._v_attrs["flow_int_keys"] = True
    for key, item in value.items():
        child = f"i{int(key)}" if isinstance(key, int | np.integer) else str(key)
        if isinstance(item, dict):
            write_context(h5, f"{path}/{child}", item, written)
        elif isinstance(item, np.ndarray):
            if item.size > 1024:
                h5.create_carray(group, child, obj=item, filters=FILTERS)
            else:  # contiguous: a chunked array costs a whole chunk on disk
                h5.create_array(group, child, obj=item)
        elif isinstance(item, list | tuple):
            group._v_attrs[child] = json.dumps(list(item))
            group._v_attrs[f"{child}__json"] = True
        else:
            group._v_attrs[child] = item


def read_context(node) -> dict:
    """The mapping `write_context` stored under ``node`` (a tables.Group)."""
    attrs = node._v_attrs
    int_keys = bool(attrs["flow_int_keys"]) if "flow_int_keys" in attrs else False

    def key_of(name):
        return int(name[1:]) if int_keys and re.fullmatch(r"i-?\d+", name) else name

    out = {}
    for name in attrs._v_attrnamesuser:
        if name == "flow_int_keys" or name.endswith("__json"):
            continue
        value = attrs[name]
        if f"{name}__json" in attrs:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key_of(name)] = value
    for child in node._v_children.values():
        key = key_of(child._v_name)
        out[key] = read_context(child) if isinstance(child, tables.Group) else child.read()
    return out


class HDF5Writer(Consumer):
    """Common part of the DL1 and DL2 writers: file, buffers, keys, context, provenance."""

    path = Param(str, REQUIRED, "output HDF5 file")
    mode = Param(str, "w", "w: overwrite; append: extend an existing file (resume)",
                 choices=("w", "append"))
    buffer_rows = Param(int, 1000, "rows buffered per table before an append")
    write_parameters = Param(bool, True, "write /dl1/event/telescope/parameters")
    write_images = Param(bool, False, "write /dl1/event/telescope/images (and true images)")

    def done_keys(self) -> list[str]:
        if getattr(self, "_h5", None) is not None:
            return sorted(self._keys)
        path = Path(self.path)
        if self.mode != "append" or not path.is_file():
            return []
        with tables.open_file(path, "r") as h5:
            return self._read_keys(h5)

    @staticmethod
    def _read_keys(h5) -> list[str]:
        if KEYS_PATH not in h5:
            return []
        return [k.decode() for k in h5.get_node(KEYS_PATH).col("key")]

    def setup(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = tables.open_file(path, "a" if self.mode == "append" else "w")
        self._keys = set(self._read_keys(self._h5))
        self._pending_keys: list[str] = []
        self._buffers: dict[str, TableBuffer] = {}
        self._n_rows = 0
        self._start = datetime.now(UTC).isoformat()
        if CONTEXT_PATH not in self._h5 and self.context:
            # the subarray only: per-pixel calibration is spent once images exist (and is large)
            storable = {k: v for k, v in self.context.items() if k == "subarray"}
            write_context(self._h5, CONTEXT_PATH, storable)
        self._tel_ids = sorted((self.context.get("subarray") or {}).get("tels", {}))

    def buffer(self, path: str, units: dict[str, str] | None = None) -> TableBuffer:
        if path not in self._buffers:
            self._buffers[path] = TableBuffer(self._h5, path, units or {})
        return self._buffers[path]

    def process(self, event: dict) -> None:
        key = self.key or f"{event['obs_id']}:{event['event_id']}"
        if key in self._keys:
            return  # duplicate delivery: already held
        ids = {"obs_id": int(event["obs_id"]), "event_id": int(event["event_id"])}
        self.write_event(event, ids)
        self._keys.add(key)
        self._pending_keys.append(key)
        self._n_rows += 1
        if self._n_rows % self.buffer_rows == 0:
            self.flush()

    def write_event(self, event: dict, ids: dict) -> None:
        sim = event.get("simulation")
        if sim:
            row = dict(ids)
            for key, (col, _, factor) in _SIM_FIELDS.items():
                if key in sim:
                    row[col] = sim[key] * factor if factor != 1 else sim[key]
            self.buffer(SHOWER_PATH, {c: u for c, u, _ in _SIM_FIELDS.values()}).add(row)
        for tel_id, tel in (event.get("tels") or {}).items():
            tel_ids = dict(ids, tel_id=np.int16(tel_id))
            name = f"tel_{int(tel_id):03d}"
            if self.write_parameters and tel.get("params"):
                params = tel["params"]
                self.buffer(f"{PARAMS_PATH}/{name}", {k: param_unit(k) for k in params}).add(
                    dict(tel_ids, **params))
            if self.write_images and "image" in tel:
                image = np.asarray(tel["image"], dtype=np.float32)
                row = dict(tel_ids, image=image,
                           peak_time=np.asarray(tel.get("peak_time", np.zeros_like(image)),
                                                dtype=np.float32),
                           image_mask=np.asarray(tel.get("mask", np.zeros(len(image), bool)),
                                                 dtype=bool))
                self.buffer(f"{IMAGES_PATH}/{name}", {"peak_time": "ns"}).add(row)
            if self.write_images and "true_image" in tel:
                self.buffer(f"{TRUE_IMAGES_PATH}/{name}").add(
                    dict(tel_ids, true_image=np.asarray(tel["true_image"], dtype=np.int32)))

    def flush(self) -> None:
        """Append every buffered row, then the keys of the events they hold."""
        for buf in self._buffers.values():
            buf.flush()
        if self._pending_keys:
            if KEYS_PATH not in self._h5:
                self._h5.create_table("/flow", "keys", np.dtype([("key", "S128")]),
                                      createparents=True, filters=FILTERS)
            keys = np.array([(k.encode(),) for k in self._pending_keys], dtype=[("key", "S128")])
            self._h5.get_node(KEYS_PATH).append(keys)
            self._pending_keys = []
        self._h5.flush()

    def teardown(self) -> None:
        if getattr(self, "_h5", None) is None or not self._h5.isopen:
            return
        try:
            self.flush()
            self._write_provenance()
        finally:
            self._h5.close()
            self._h5 = None

    def _write_provenance(self) -> None:
        inputs = (self.context.get("provenance") or {}).get("input_files", [])
        record = np.array([(self._start.encode(), datetime.now(UTC).isoformat().encode(),
                            json.dumps(versions()).encode(), json.dumps(list(inputs)).encode(),
                            self._n_rows, type(self).__name__.encode())],
                          dtype=[("start_time", "S40"), ("stop_time", "S40"), ("versions", "S1024"),
                                 ("input_files", "S4096"), ("n_events", "i8"), ("writer", "S32")])
        if PROVENANCE_PATH not in self._h5:
            self._h5.create_table("/configuration/provenance", "runs", record.dtype,
                                  createparents=True, chunkshape=(4,))
        self._h5.get_node(PROVENANCE_PATH).append(record)


class DL1Writer(HDF5Writer):
    """DL1 (parameters, optionally images) and simulation truth, ctapipe layout."""


class DL2Writer(HDF5Writer):
    """DL2 (geometry, energy, classification) plus DL1 parameters and truth, ctapipe layout."""

    geometry_algorithm = Param(str, "HillasReconstructor", "name of the geometry table/prefix")
    energy_algorithm = Param(str, "FlowEnergyRegressor", "name of the energy table/prefix")
    classification_algorithm = Param(str, "FlowClassifier", "name of the classification prefix")

    def write_event(self, event: dict, ids: dict) -> None:
        super().write_event(event, ids)
        dl2 = event.get("dl2")
        if not dl2:
            return
        algo = self.geometry_algorithm
        row = dict(ids, **{f"{algo}_{k}": dl2[k] for k in _GEOMETRY if k in dl2})
        if "telescopes" in dl2 and self._tel_ids:
            row[f"{algo}_telescopes"] = np.isin(self._tel_ids, np.asarray(dl2["telescopes"]))
        self.buffer(f"/dl2/event/subarray/geometry/{algo}",
                    {f"{algo}_{k}": u for k, u in _GEOMETRY.items()}).add(row)
        if "energy" in dl2:
            e_algo = self.energy_algorithm
            valid = dl2.get("energy_valid", np.isfinite(dl2["energy"]))
            self.buffer(f"/dl2/event/subarray/energy/{e_algo}", {f"{e_algo}_energy": "TeV"}).add(
                dict(ids, **{f"{e_algo}_energy": float(dl2["energy"]),
                             f"{e_algo}_is_valid": bool(valid)}))
        if "gammaness" in dl2:
            c_algo = self.classification_algorithm
            self.buffer(f"/dl2/event/subarray/classification/{c_algo}").add(
                dict(ids, **{f"{c_algo}_prediction": float(dl2["gammaness"]),
                             f"{c_algo}_is_valid": bool(np.isfinite(dl2["gammaness"]))}))
