"""ctapipe 0.28's table schemas (data model v7.1.0), as data: columns, dtypes and column metadata.

`ctapipe_schema.json` beside this module holds, for every kind of table that ``ctapipe-process``
(DL1 parameters and images, DL2 geometry, service statistics) and ``ctapipe-apply-models`` write,
the table's title, its numpy
dtype (column names, dtypes, shapes) and the attributes ctapipe's ``HDF5TableWriter`` puts on it
(``CTAFIELD_{i}_UNIT``/``_TRANSFORM``/``_DESC``/``_NAME``/``_ENUM``...). Writers fill tables in this
schema, so they need neither ctapipe nor its containers.

A kind written with and without optional last columns (``simulation/event/telescope/images/
tel_NNN``: the ``true_image`` column of ``--write-images``) keeps the shorter dtype and the
attributes of all its columns; a table gets those of the columns it has
(`stages.io.ctapipe_layout.write_table`). `extract_schema` merges them so.

Kinds are table paths with the variable parts replaced: ``tel_NNN`` for a telescope table,
``{algo}`` for an algorithm name (in the path and as the column prefix), ``_N`` for an index.
Attribute values that ctapipe stores as pickled Python enums are kept as ``{"__enum__": "module:Name"}``
and written back as the same pickle (protocol 0: a reference to the class, no code).

`extract_schema` rebuilds the mapping from files ctapipe wrote; tests compare it with the JSON
(``python -m stages.io.ctapipe_schema REF.h5 ... > ctapipe_schema.json`` regenerates it).
"""

from __future__ import annotations

import enum
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import tables

SCHEMA_FILE = Path(__file__).with_name("ctapipe_schema.json")
# attributes that describe one file, not the schema (written per file by the layout module)
PER_FILE_ATTRS = {"CLASS", "VERSION", "TITLE", "NROWS", "FIELD_", "ORIGIN", "SOFT_VER", "SUBARRAY",
                  "name", "reference_itrs_x", "reference_itrs_y", "reference_itrs_z", "CAM_ID",
                  "CAM_ROT", "PIX_ROT", "PIX_TYPE", "NCHAN", "NPIXELS", "NSAMPLES", "REFWIDTH",
                  "SAMPFREQ", "NSAMPLNG"}
_CONTAINERS = "geometry|energy|classification|impact|disp|particle_type|tel_event_statistics"
_PER_FILE_RE = re.compile(r"^CTAFIELD_\d+_MAXLEN$")  # string widths follow the values


def kind_of(path: str, algorithms: tuple[str, ...] = ()) -> str:
    """Schema kind of a table path: tel_NNN, {algo} and _N replace the variable parts."""
    kind = re.sub(r"/tel_\d+$", "/tel_NNN", path.lstrip("/"))
    kind = re.sub(r"_\d+$", "_N", kind)
    for algo in algorithms:
        kind = re.sub(rf"(/(?:{_CONTAINERS})/){re.escape(algo)}(?=/|$)", r"\1{algo}", kind)
    return kind


def _encode_attr(value):
    if isinstance(value, type) and issubclass(value, enum.Enum):
        return {"__enum__": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def enum_pickle(ref: str) -> np.bytes_:
    """The protocol-0 pickle of the enum class ``module:Name`` (what PyTables stores for it)."""
    module, name = ref.split(":")
    return np.bytes_(f"c{module}\n{name}\np0\n.".encode())


def _algorithms(h5: tables.File) -> tuple[str, ...]:
    algos = set()
    for where in ("/dl2/event/subarray", "/dl2/event/telescope", "/dl2/service/tel_event_statistics"):
        if where not in h5:
            continue
        for node in h5.walk_nodes(where):
            parent = node._v_parent._v_name
            if parent in _CONTAINERS.split("|") and not node._v_name.startswith("tel_"):
                algos.add(node._v_name)
    return tuple(sorted(algos, key=len, reverse=True))


def _table_schema(node: tables.Table, algos: tuple[str, ...]) -> dict:
    def generic(text: str) -> str:
        for algo in algos:
            text = text.replace(f"{algo}_", "{algo}_")
        return text

    descr = [[generic(name), node.dtype[name].base.str, list(node.dtype[name].shape)]
             for name in node.dtype.names]
    attrs = {}
    for name in node._v_attrs._v_attrnamesuser:
        if name in PER_FILE_ATTRS or _PER_FILE_RE.match(name):
            continue
        attrs[name] = _encode_attr(node._v_attrs[name])
        if isinstance(attrs[name], str):
            attrs[name] = generic(attrs[name])
    return {"title": node._v_title, "dtype": descr, "attrs": attrs}


def extract_schema(paths) -> dict:
    """{kind: {"title", "dtype", "attrs"}} of every table in the given ctapipe-written files."""
    out: dict = {}
    for path in paths:
        with tables.open_file(path, "r") as h5:
            algos = _algorithms(h5)
            for node in h5.walk_nodes("/", "Table"):
                kind = kind_of(node._v_pathname, algos)
                schema = _table_schema(node, algos)
                if kind in out:  # with and without optional last columns: the shorter dtype
                    schema["attrs"] = dict(sorted({**schema["attrs"], **out[kind]["attrs"]}.items()))
                    if len(out[kind]["dtype"]) <= len(schema["dtype"]):
                        schema["dtype"], schema["title"] = out[kind]["dtype"], out[kind]["title"]
                out[kind] = schema
    return dict(sorted(out.items()))


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The shipped schema (ctapipe 0.28, data model v7.1.0)."""
    return json.loads(SCHEMA_FILE.read_text())


def table_dtype(kind: str, algo: str = "", shapes: dict | None = None) -> np.dtype:
    """numpy dtype of a table kind; ``shapes`` overrides a column's shape (tel masks, pixels).

    Built once per (kind, algo, shapes): writers ask for it for every row they fill.
    """
    return _table_dtype(kind, algo, frozen_shapes(shapes))


def frozen_shapes(shapes: dict | None) -> tuple:
    """``shapes`` as a hashable key: ((column, shape tuple), ...) sorted by column."""
    return tuple(sorted((name, tuple(shape)) for name, shape in shapes.items())) if shapes else ()


@lru_cache(maxsize=4096)
def _table_dtype(kind: str, algo: str, shapes: tuple) -> np.dtype:
    overrides = dict(shapes)
    fields = []
    for name, dt, shape in load_schema()[kind]["dtype"]:
        name = name.replace("{algo}", algo)
        shape = overrides.get(name, tuple(shape))
        fields.append((name, dt, tuple(shape)) if shape else (name, dt))
    return np.dtype(fields)


def table_attrs(kind: str, algo: str = "") -> dict:
    """The column metadata attributes of a table kind, ready for ``node._v_attrs``."""
    out = {}
    for name, value in load_schema()[kind]["attrs"].items():
        if isinstance(value, dict) and "__enum__" in value:
            out[name] = enum_pickle(value["__enum__"])
        elif isinstance(value, str):
            out[name] = value.replace("{algo}", algo)
        else:
            out[name] = value
    return out


def column_units(kind: str, algo: str = "") -> dict[str, str]:
    """{column: unit} of a table kind ('' for dimensionless columns)."""
    attrs = load_schema()[kind]["attrs"]
    out = {}
    for pos, (name, _, _) in enumerate(load_schema()[kind]["dtype"]):
        out[name.replace("{algo}", algo)] = attrs.get(f"CTAFIELD_{pos}_UNIT", "")
    return out


def table_title(kind: str, algo: str = "") -> str:
    return load_schema()[kind]["title"].replace("{algo}", algo)


if __name__ == "__main__":  # pragma: no cover - regenerates the shipped JSON
    json.dump(extract_schema(sys.argv[1:]), sys.stdout, indent=1)
    sys.stdout.write("\n")
