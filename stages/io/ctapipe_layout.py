"""ctapipe's HDF5 data model (v7.1.0) from flow's event and context dicts: pure functions, no ctapipe.

Every function returns numpy structured arrays in the schema of `stages.io.ctapipe_schema` (the
columns, dtypes and metadata ctapipe 0.28 writes) and `write_table` stores one with its metadata.

- `instrument_tables`: what ``SubarrayDescription.to_hdf`` writes (layout, optics, one camera
  geometry and readout per camera type, sorted by name as ctapipe does) from ``context["subarray"]``.
- `trigger_rows`, `impact_rows`, `parameter_row`, `geometry_row`...: one event's rows.
- `simulation_run_row`, `observation_rows`, `pointing_row`, `shower_distribution_row`: the
  configuration tables, from a ``simulation`` mapping (`stages.io.simtel_meta`, `stages.io.toy_simconfig`).
- `product_metadata`: the ``CTA ...`` reference metadata attributes of the file's root.

Telescope kinds (size type, reflector shape, number of mirrors) come from the optics name through
ctapipe's own guess table; an unknown telescope gets ctapipe's ``unknown_telescope`` answer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import tables

from .ctapipe_schema import frozen_shapes, table_attrs, table_dtype, table_title
from .telescope_guess import TELESCOPES

DATA_MODEL_VERSION = "v7.1.0"
CTAPIPE_VERSION = "0.28.0"  # the version whose data model the tables follow
EVENT_TYPE_SUBARRAY = 32  # ctapipe.containers.EventType.SUBARRAY
# ctapipe's guess table, by optics name: (size type, n_mirrors, reflector shape)
KNOWN_OPTICS = {g.name: (g.type, g.n_mirrors, g.reflector_shape) for _, g in TELESCOPES}


def size_type(mirror_area: float) -> str:
    """ctapipe's ``type_from_mirror_area``."""
    diameter = 2 * np.sqrt(mirror_area / np.pi)
    return "SST" if diameter < 8 else ("MST" if diameter < 16 else "LST")


def optics_kind(optics: dict) -> tuple[str, int, str]:
    """(size type, n_mirrors, reflector shape) of a context optics mapping."""
    known = KNOWN_OPTICS.get(optics.get("name", ""))
    if known:
        return known
    area = float(optics.get("mirror_area", np.nan))
    return (size_type(area) if np.isfinite(area) else "UNKNOWN"), 1, "UNKNOWN"


def rows(kind: str, n: int, algo: str = "", shapes: dict | None = None) -> np.ndarray:
    """``n`` rows of a schema kind at ctapipe's defaults: NaN floats, -1 ints, False bools (a new
    array: copies of one default row, built once per kind, algo and shapes, made from its bytes:
    0.3 µs, against 12 µs for ``np.repeat`` of a hundred-column row; the writers make ~30 a event)."""
    shapes = frozen_shapes(shapes)
    dtype, raw = _default_bytes(kind, algo, shapes)
    if dtype.hasobject:   # no schema has one: bytes would copy pointers
        return np.repeat(default_row(kind, algo, shapes), n)
    return np.frombuffer(bytearray(raw * n), dtype)


@lru_cache(maxsize=4096)
def _default_bytes(kind: str, algo: str, shapes: tuple) -> tuple[np.dtype, bytes]:
    row = default_row(kind, algo, shapes)
    return row.dtype, row.tobytes()


@lru_cache(maxsize=4096)
def default_row(kind: str, algo: str, shapes: tuple) -> np.ndarray:
    """One row of a schema kind at ctapipe's defaults (shared: `rows` hands out copies)."""
    out = np.zeros(1, dtype=table_dtype(kind, algo, dict(shapes)))
    for name in out.dtype.names:
        base = out.dtype[name].base
        if base.kind == "f":
            out[name] = np.nan
        elif base.kind == "i" and name not in ("obs_id", "event_id", "tel_id"):
            out[name] = -1
    out.flags.writeable = False
    return out


def fill(row: np.ndarray, values: dict) -> np.ndarray:
    """Set the columns of ``row`` that ``values`` names (others keep their defaults)."""
    names = row.dtype.fields
    for name, value in values.items():
        if value is not None and name in names:
            row[name] = value
    return row


def with_strings(kind: str, values: dict[str, list], algo: str = "") -> np.ndarray:
    """A table of ``kind`` whose string columns are as wide as their longest value (as ctapipe)."""
    fields = []
    for name in table_dtype(kind, algo).names:
        dt = table_dtype(kind, algo)[name]
        if dt.kind == "S":
            width = max([len(str(v).encode()) for v in values[name]] + [1])
            dt = np.dtype(f"S{width}")
        fields.append((name, dt))
    n = len(next(iter(values.values())))
    out = np.zeros(n, dtype=fields)
    for name in out.dtype.names:
        out[name] = values[name]
    return out


_DESCRIPTIONS: dict = {}   # dtype -> its PyTables Description, built once


def description(dtype: np.dtype):
    """The PyTables Description of ``dtype``, built once per dtype (4 ms for a parameter table's
    hundred columns, against 10 ms for the rest of its creation) and shared by its tables: a
    sim_telarray run makes one table per telescope and kind, 400 on the SST-1M file."""
    desc = _DESCRIPTIONS.get(dtype)
    if desc is None:
        desc = _DESCRIPTIONS[dtype] = tables.description.descr_from_dtype(dtype)[0]
    return desc


_PY_SCALARS = (bool, bytes, int, float, complex, str, np.str_)
_SYS_ATTRS = frozenset(tables.attributeset.SYS_ATTRS)


def _system_name(name: str) -> bool:
    """PyTables' ``issysattrname`` (which costs 8 µs a call: a NumPy product of one boolean)."""
    return name in _SYS_ATTRS or all(name.startswith(p)
                                     for p in tables.attributeset.SYS_ATTRS_PREFIXES)


def set_attrs(node: tables.Node, values: dict) -> None:
    """``node._v_attrs[name] = value`` for each item, the same attributes written the same way, with
    PyTables' bookkeeping of its attribute names done once instead of per attribute: a parameter
    table has about 120, and each ``__setitem__`` costs ~25 µs of Python besides the HDF5 write
    (the serial writer of a sim_telarray run creates ~400 such tables)."""
    attrs = node._v_attrs
    own_way = node._v_file.is_undo_enabled() or not hasattr(attrs, "_g_setattr")
    plain = {} if own_way else {name: value for name, value in values.items()
                                if not _system_name(name)}
    for name in values.keys() - plain.keys():   # system names, or undo logging: PyTables' own way
        attrs[name] = values[name]
    if not plain:
        return
    node._v_file._check_writable()
    for name, value in plain.items():
        stored = value
        if type(value) in _PY_SCALARS:   # as AttributeSet._g__setattr: a NumPy scalar
            stored = np.array(value)
            value = stored[()]
        attrs._g_setattr(node, name, stored)
        attrs.__dict__[name] = value
    known = set(attrs._v_attrnames)
    new = [name for name in plain if name not in known]
    for names in (attrs._v_attrnames, attrs._v_attrnamesuser):
        names.extend(new)
        names.sort()


def write_table(h5: tables.File, path: str, kind: str, data: np.ndarray, algo: str = "",
                attrs: dict | None = None, filters=None) -> tables.Table:
    """Create ``path`` with ``data`` and the schema's metadata (plus string widths and ``attrs``)."""
    where, _, name = path.rpartition("/")
    table = h5.create_table(where, name, description(data.dtype), title=table_title(kind, algo),
                            createparents=True, filters=filters, expectedrows=max(len(data), 1000))
    schema = table_attrs(kind, algo)
    if any(key.startswith("CTAFIELD_") for key in attrs or {}):  # the caller knows the columns
        schema = {k: v for k, v in schema.items() if not k.startswith("CTAFIELD_")}
    # a kind's optional last columns (the true image of ctapipe's --write-images): only those held
    schema = {k: v for k, v in schema.items()
              if not k.startswith("CTAFIELD_") or int(k.split("_")[1]) < len(data.dtype.names)}
    widths = {f"CTAFIELD_{pos}_MAXLEN": np.int64(data.dtype[col].itemsize)
              for pos, col in enumerate(data.dtype.names) if data.dtype[col].kind == "S"}
    set_attrs(table, {**schema, **widths, **(attrs or {})})
    if len(data):
        table.append(data)
    return table


def _unique(items: list, key) -> list:
    seen: dict = {}
    for item in items:
        seen.setdefault(key(item), item)
    return list(seen.values())


def _camera_key(tel: dict) -> tuple:
    cam = tel["camera"]
    return (cam["name"], cam["pix_x"].tobytes(), cam["pix_y"].tobytes(), cam["pix_type"],
            float(cam["pix_rotation_deg"]), int(tel.get("n_samples", 0)),
            float(tel.get("sampling_rate_ghz", 0)),
            np.asarray(tel.get("reference_pulse_shape", [])).tobytes())


def _optics_key(optics: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in optics.items()))


def reference_itrs(location: dict) -> tuple[float, float, float]:
    """Geocentric (ITRS) x, y, z in m of the reference location (WGS84), as ctapipe stores it.

    ERFA's ``gd2gc``, the routine astropy's ``EarthLocation.from_geodetic`` calls, without importing
    ``astropy.coordinates`` (about a second of the writer's set-up)."""
    import erfa

    xyz = erfa.gd2gc(1, np.deg2rad(location["lon_deg"]), np.deg2rad(location["lat_deg"]),
                     location["height_m"])       # 1: WGS84
    return tuple(float(c) for c in xyz)


def instrument_tables(subarray: dict) -> list[tuple[str, str, np.ndarray, dict]]:
    """[(path, kind, data, attrs)] of ``SubarrayDescription.to_hdf`` for a context subarray."""
    tels = dict(sorted(subarray["tels"].items()))
    cameras = sorted(_unique(list(tels.values()), _camera_key), key=lambda t: t["camera"]["name"])
    camera_index = {_camera_key(t): i for i, t in enumerate(cameras)}
    optics = sorted(_unique([t["optics"] for t in tels.values()], _optics_key),
                    key=lambda o: o.get("name", ""))
    optics_index = {_optics_key(o): i for i, o in enumerate(optics)}
    kinds = {tel_id: optics_kind(t["optics"]) for tel_id, t in tels.items()}
    common = {"ORIGIN": "ctapipe.instrument.SubarrayDescription", "SOFT_VER": CTAPIPE_VERSION,
              "SUBARRAY": subarray["name"]}
    x, y, z = reference_itrs(subarray["reference_location"])
    layout = with_strings("configuration/instrument/subarray/layout", {
        "tel_id": list(tels), "name": [t["optics"]["name"] for t in tels.values()],
        "type": [kinds[i][0] for i in tels],
        "pos_x": [t["position"][0] for t in tels.values()],
        "pos_y": [t["position"][1] for t in tels.values()],
        "pos_z": [t["position"][2] for t in tels.values()],
        "camera_name": [t["camera"]["name"] for t in tels.values()],
        "optics_name": [t["optics"]["name"] for t in tels.values()],
        "camera_index": [camera_index[_camera_key(t)] for t in tels.values()],
        "optics_index": [optics_index[_optics_key(t["optics"])] for t in tels.values()],
        "tel_description": [f"{kinds[i][0]}_{t['optics']['name']}_{t['camera']['name']}"
                            for i, t in tels.items()],
    })
    out = [("/configuration/instrument/subarray/layout", "configuration/instrument/subarray/layout",
            layout, dict(common, name=subarray["name"], reference_itrs_x=x, reference_itrs_y=y,
                         reference_itrs_z=z))]
    optics_kinds = [optics_kind(o) for o in optics]
    optics_table = with_strings("configuration/instrument/telescope/optics", {
        "optics_name": [o["name"] for o in optics], "size_type": [k[0] for k in optics_kinds],
        "reflector_shape": [k[2] for k in optics_kinds],
        "mirror_area": [o.get("mirror_area", 0.0) for o in optics],  # ctapipe hashes it
        "n_mirrors": [k[1] for k in optics_kinds],
        "n_mirror_tiles": [o.get("n_mirror_tiles", -1) for o in optics],
        "equivalent_focal_length": [o.get("equivalent_focal_length", o["focal_length"]) for o in optics],
        "effective_focal_length": [o.get("effective_focal_length", np.nan) for o in optics],
    })
    out.append(("/configuration/instrument/telescope/optics", "configuration/instrument/telescope/optics",
                optics_table, common))
    for i, tel in enumerate(cameras):
        out.extend(_camera_tables(i, tel))
    return out


def _camera_tables(index: int, tel: dict) -> list[tuple[str, str, np.ndarray, dict]]:
    cam = tel["camera"]
    n_pix = len(cam["pix_x"])
    geometry = np.zeros(n_pix, dtype=table_dtype("configuration/instrument/telescope/camera/geometry_N"))
    geometry["pix_id"] = np.arange(n_pix)
    geometry["pix_x"], geometry["pix_y"] = cam["pix_x"], cam["pix_y"]
    geometry["pix_area"] = np.broadcast_to(cam["pix_area"], n_pix)
    where = "/configuration/instrument/telescope/camera"
    geo_attrs = {"CAM_ID": cam["name"], "PIX_TYPE": cam["pix_type"],
                 "PIX_ROT": float(cam["pix_rotation_deg"]), "CAM_ROT": float(cam["cam_rotation_deg"])}
    pulse = np.atleast_2d(np.asarray(tel.get("reference_pulse_shape", np.zeros((1, 0))), np.float64))
    width = float(tel.get("reference_pulse_sample_width_ns", np.nan))
    fields = [(f"reference_pulse_shape_channel{g}", "<f8") for g in range(len(pulse))]
    readout = np.zeros(pulse.shape[1], dtype=fields + [("reference_pulse_sample_time", "<f8")])
    for g in range(len(pulse)):
        readout[f"reference_pulse_shape_channel{g}"] = pulse[g]
    readout["reference_pulse_sample_time"] = np.arange(pulse.shape[1]) * width
    n_ch = len(pulse)
    readout_attrs = {"CAM_ID": cam["name"], "NCHAN": np.int64(n_ch), "NPIXELS": np.int64(n_pix),
                     "NSAMPLES": np.int32(tel.get("n_samples", 0)),
                     "SAMPFREQ": float(tel.get("sampling_rate_ghz", np.nan)), "REFWIDTH": width,
                     f"CTAFIELD_{n_ch}_TRANSFORM": "quantity", f"CTAFIELD_{n_ch}_UNIT": "ns"}
    return [(f"{where}/geometry_{index}", "configuration/instrument/telescope/camera/geometry_N",
             geometry, geo_attrs),
            (f"{where}/readout_{index}", "configuration/instrument/telescope/camera/readout_N",
             readout, readout_attrs)]


def tel_mask(tel_ids: list[int], subarray_ids: list[int]) -> np.ndarray:
    """ctapipe's TelListToMaskTransform: bool per subarray telescope (in tel_id order); a set
    lookup per telescope (``np.isin`` costs 20 µs for a few telescopes, twice per event)."""
    wanted = {int(t) for t in tel_ids}
    return np.fromiter((int(t) in wanted for t in subarray_ids), bool, len(subarray_ids))


def axis_distances(positions: np.ndarray, core_x: float, core_y: float, alt_rad: float,
                   az_rad: float) -> np.ndarray:
    """Distance (m) of ground positions (n, 3) to the axis through the core (ctapipe's impact)."""
    direction = np.array([np.cos(alt_rad) * np.cos(az_rad), -np.cos(alt_rad) * np.sin(az_rad),
                          np.sin(alt_rad)])
    offset = np.asarray(positions, np.float64) - np.array([core_x, core_y, 0.0])
    ox, oy, oz = offset[..., 0], offset[..., 1], offset[..., 2]
    dx, dy, dz = direction
    # np.cross(offset, direction), term by term as NumPy computes it (its axis handling costs
    # 40 µs a call)
    cross = np.stack([oy * dz - oz * dy, oz * dx - ox * dz, ox * dy - oy * dx], axis=-1)
    return np.linalg.norm(cross, axis=-1)
