"""flow's own context tree in HDF5 (``/configuration/flow/context``), read back by `read_context`.

A dict is a group, an array an array, a scalar or string an attribute; int keys are stored as
``i<key>`` groups (group attribute ``flow_int_keys``); a dict shared by several telescopes (one
camera) is stored once and hard-linked. Lists and tuples are JSON attributes.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import tables

FILTERS = tables.Filters(complevel=5, complib="blosc:zstd", shuffle=True)


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
