"""The payload codec: one event (a Python value) <-> a list of ZeroMQ frames, without pickle.

Contract: ``decode(encode(x)) == x`` for every value built from dict (str or int keys), list, tuple
(comes back as list), str, int (64-bit), float, bool, None, bytes, numeric/bool numpy arrays and
scalars, and astropy Quantities (unit and dtype exact). Anything else raises `ProtocolError` naming
the path of the offending value. `decode` raises `ProtocolError` and nothing else on any input.

Frames are ``[header, buf1, buf2, ...]``: the header is msgpack; arrays larger than ``inline_max``
bytes travel as their own frame, passed to ZeroMQ without a copy and read back as zero-copy,
read-only views. The wire format (ext codes, allow-list) is described in docs/codec.md.

About 670 lines in one module on purpose: the encoder and the decoder share the ext codes, the dtype
tables and the pre-packed structs, and the format they write is held still byte for byte by
tests/test_wire_codec.py; both halves are hot paths whose module-level lookups are part of their speed.
"""

from __future__ import annotations

import math
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from flow.errors import ProtocolError

__all__ = ["encode", "decode", "encoded_size", "configure_shm"]

# msgpack ext codes (see docs/codec.md)
EXT_NDARRAY_INLINE = 1  # dtype:4s ndim:u32 shape:u64[ndim] raw-bytes
EXT_NDARRAY_FRAME = 2  # dtype:4s ndim:u32 shape:u64[ndim] frame-index:u32
EXT_NUMPY_SCALAR = 3  # dtype:4s raw-bytes(itemsize)
EXT_QUANTITY = (
    4  # ulen:u16 unit-utf8 kind:u8 (1 or 2) pad-to-8, then the array payload of that kind
)

EXT_NDARRAY_SHM = 5  # dtype:4s ndim:u32 shape:u64[ndim] offset:u64 nlen:u16 name (flow/wire/shm.py)

MAX_NDIM = 32
MAX_DEPTH = 256  # nesting of dicts/lists accepted by encode
MAX_UNIT_LEN = 256
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1

# The allow-list: every numeric and bool dtype, in both byte orders. Nothing else is decoded.
_DTYPES: dict[str, np.dtype] = {}
for _c in "b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8 c8 c16".split():  # canonical types: i8 is np.int64
    for _d in (np.dtype(_c).newbyteorder(">"), np.dtype(_c)):
        _DTYPES[_d.str] = _d
_DTYPE_BYTES = {s: s.encode("ascii").ljust(4, b"\0") for s in _DTYPES}  # NUL-padded to 4
_BYTES_DTYPE = {b: _DTYPES[s] for s, b in _DTYPE_BYTES.items()}
_DTYPE_CODE = {_DTYPES[s]: b for s, b in _DTYPE_BYTES.items()}  # keyed by dtype: cheaper than .str
_BOOL = _DTYPES["|b1"]

_U8, _U16, _U32 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ND_HEAD = struct.Struct("<4sI")  # dtype, ndim: 8 bytes, so inline data starts 8-byte aligned
_SHAPES = [struct.Struct(f"<{n}Q") for n in range(MAX_NDIM + 1)]
_PAD = [b"\0" * n for n in range(8)]

# Encode fast path for 1-D arrays (most event arrays): the dtype code and ndim=1 of the header in
# one lookup, which is also the allow-list check. Keyed by dtype like _DTYPE_CODE.
_HEAD_1D = {dt: code + _U32.pack(1) for dt, code in _DTYPE_CODE.items()}
_UINT8 = np.dtype(np.uint8)
_FRAME_INDEX = [_U32.pack(i) for i in range(64)]  # frame references of the first frames, prepacked
# The whole ext of a 1-D array in its own frame is the same event after event: per dtype, a bounded
# cache (length << 6 | frame index, index < 64) -> ExtType (an immutable tuple, shared safely).
_FRAME_EXTS: dict[np.dtype, dict[int, tuple]] = {dt: {} for dt in _HEAD_1D}

# msgpack.ExtType(code, data) checks its arguments in Python (~0.5 us a call); the codec builds
# every ext with an int code in 0..127 and bytes data, so it makes the namedtuple directly.
_ExtType = msgpack.ExtType
_new_ext = tuple.__new__
_unpackb = msgpack.unpackb


_UNIT_TO_STR: dict = {}  # astropy unit -> string, checked to parse back to an equal unit
_STR_TO_UNIT: dict = {}  # string -> astropy unit; u.Unit(s) costs ~0.2 ms, so cache (bounded)


class _Unsupported(Exception):
    """Internal: a value the codec cannot carry; `encode` turns it into a ProtocolError with a path."""


# ---------------------------------------------------------------------------------------- encode


def _array_payload(arr: np.ndarray, frames: list, inline_max: int, prefix: bytes = b"") -> tuple:
    """(ext code, payload) for an ndarray; large arrays are appended to `frames` without a copy."""
    ndim, dtype = arr.ndim, arr.dtype
    if ndim == 1:  # fast path: prepacked dtype and ndim, then the one dimension
        head = _HEAD_1D.get(dtype)
        if head is None:
            raise _Unsupported(_dtype_reason(dtype))
        head += _U64.pack(len(arr))
    else:
        dt = _DTYPE_CODE.get(dtype)
        if dt is None:
            raise _Unsupported(_dtype_reason(dtype))
        if ndim > MAX_NDIM:
            raise _Unsupported(f"array has {ndim} dimensions (at most {MAX_NDIM})")
        head = _ND_HEAD.pack(dt, ndim) + _SHAPES[ndim].pack(*arr.shape)
    if prefix:
        head = prefix + head
    nbytes = arr.nbytes
    if nbytes <= inline_max:
        return EXT_NDARRAY_INLINE, head + arr.tobytes()  # C order, whatever the array's layout
    if not nbytes:
        frames.append(b"")
    else:
        data = arr.data  # cheaper than arr.flags.c_contiguous, and needed anyway
        if not data.c_contiguous:
            data = arr.copy(order="C").data
        # a flat byte view, no copy (uint8 1-D: already one, format "B")
        frames.append(data if ndim == 1 and dtype is _UINT8 else data.cast("B"))
    index = len(frames) - 1
    return EXT_NDARRAY_FRAME, head + (_FRAME_INDEX[index] if index < 64 else _U32.pack(index))


def _shm_payload(arr: np.ndarray, refs: list) -> bytes:
    """An array in shared memory (flow/wire/shm.py): its segment name and offset, no data."""
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")
    name, offset = _shm_store.put(arr)
    refs.append(f"{name}:{arr.nbytes}")
    nb = name.encode()
    return (_ND_HEAD.pack(_DTYPE_CODE[arr.dtype], arr.ndim) + _SHAPES[arr.ndim].pack(*arr.shape)
            + struct.pack("<QH", offset, len(nb)) + nb)


_shm_store = None  # flow.wire.shm.ShmStore of this process, set by configure_shm


def configure_shm(store) -> None:
    """Let `encode(..., refs=[...])` put arrays of ``store.threshold`` bytes or more in shared
    memory, and `decode` map them (None: plain frames only, and shared-memory payloads rejected)."""
    global _shm_store
    _shm_store = store


def _quantity_payload(q, frames: list, inline_max: int) -> bytes:
    s = _UNIT_TO_STR.get(q.unit) or _unit_string(q.unit)
    arr = q.view(np.ndarray)
    kind = EXT_NDARRAY_INLINE if arr.nbytes <= inline_max else EXT_NDARRAY_FRAME
    prefix = _U16.pack(len(s.encode())) + s.encode() + _U8.pack(kind)
    prefix += _PAD[-len(prefix) % 8]
    return _array_payload(arr, frames, inline_max, prefix)[1]


def _unit_string(unit) -> str:
    import astropy.units as u

    if not isinstance(unit, u.UnitBase):
        raise _Unsupported(f"unit {unit} of type {type(unit).__name__} is not supported")
    s = unit.to_string()
    if len(s.encode()) > MAX_UNIT_LEN or u.Unit(s) != unit:
        raise _Unsupported(f"unit {unit} does not round-trip through its string form {s!r}")
    if len(_UNIT_TO_STR) < 1024:
        _UNIT_TO_STR[unit] = s
    return s


def _dtype_reason(dt: np.dtype) -> str:
    return (
        f"dtype {dt} is not supported (only bool, int8..uint64, float16/32/64 and "
        f"complex64/128 arrays; send structured fields as separate arrays)"
    )


class _Encoder:
    """Per-thread packer and the frame list of the call in progress (msgpack's Packer is stateful)."""

    def __init__(self):
        self.frames: list = []
        self.inline_max = 0
        self.refs: list | None = None  # shared-memory references of the call, when enabled
        self.packer = msgpack.Packer(default=self.default, use_bin_type=True, strict_types=True)

    def default(self, obj: Any) -> Any:
        t = type(obj)
        if t is np.ndarray:
            if self.refs is not None and obj.nbytes >= _shm_store.threshold \
                    and obj.dtype in _DTYPE_CODE and obj.ndim <= MAX_NDIM:
                try:
                    return _new_ext(_ExtType, (EXT_NDARRAY_SHM, _shm_payload(obj, self.refs)))
                except OSError:  # /dev/shm full: this array travels as a plain frame
                    pass
            if obj.ndim == 1:  # _array_payload's 1-D path, inlined: most event arrays
                dt = obj.dtype
                exts = _FRAME_EXTS.get(dt)  # None: not in the allow-list (_array_payload says why)
                if exts is not None:
                    nbytes = obj.nbytes
                    if nbytes <= self.inline_max:
                        return _new_ext(_ExtType, (EXT_NDARRAY_INLINE, _HEAD_1D[dt]
                                                   + _U64.pack(len(obj)) + obj.tobytes()))
                    if nbytes:
                        data = obj.data  # cheaper than obj.flags.c_contiguous, needed anyway
                        if not data.c_contiguous:
                            data = obj.copy().data
                        frames = self.frames
                        index = len(frames)
                        frames.append(data if dt is _UINT8 else data.cast("B"))  # flat byte view
                        if index < 64:
                            key = len(obj) << 6 | index
                            ext = exts.get(key)
                            if ext is None:
                                ext = _new_ext(_ExtType, (EXT_NDARRAY_FRAME, _HEAD_1D[dt]
                                                          + _U64.pack(len(obj)) + _FRAME_INDEX[index]))
                                _remember(exts, key, ext)
                            return ext
                        return _new_ext(_ExtType, (EXT_NDARRAY_FRAME, _HEAD_1D[dt]
                                                   + _U64.pack(len(obj)) + _U32.pack(index)))
            return _new_ext(_ExtType, _array_payload(obj, self.frames, self.inline_max))
        if t is tuple:
            return list(obj)
        if isinstance(obj, np.generic):
            dt = _DTYPE_CODE.get(obj.dtype)
            if dt is None:
                raise _Unsupported(
                    f"numpy scalar type {t.__name__} is not supported (only bool, "
                    f"int, uint, float and complex scalars)"
                )
            return _new_ext(_ExtType, (EXT_NUMPY_SCALAR, dt + obj.tobytes()))
        units = sys.modules.get("astropy.units")  # a Quantity exists only if astropy is imported
        if units is not None and isinstance(obj, units.Quantity):
            return _new_ext(
                _ExtType, (EXT_QUANTITY, _quantity_payload(obj, self.frames, self.inline_max))
            )
        if isinstance(obj, np.ma.MaskedArray):
            raise _Unsupported("masked arrays are not supported (send .filled() and the mask)")
        if isinstance(obj, np.ndarray):  # other subclasses (memmap, ...) travel as plain arrays
            return _new_ext(_ExtType, _array_payload(np.asarray(obj), self.frames, self.inline_max))
        if isinstance(obj, dict):
            return dict(obj)
        if isinstance(obj, (list, tuple)):
            return list(obj)
        if t is int:
            raise _Unsupported("int out of the 64-bit range")
        raise _Unsupported(_type_reason(obj))


def _type_reason(v: Any) -> str:
    t = type(v)
    if t is set or t is frozenset:
        hint = "convert it to a list or array"
    elif isinstance(v, (str, bytes, int, float)):  # subclasses: enums, np.str_, ...
        base = next(b for b in (str, bytes, int, float) if isinstance(v, b))
        hint = f"convert it with {base.__name__}()"
    else:
        hint = "convert it to a dict, list or array"
    return f"type {t.__name__} is not supported ({hint})"


_local = threading.local()


def _encoder() -> _Encoder:
    try:
        return _local.encoder
    except AttributeError:
        _local.encoder = _Encoder()
        return _local.encoder


def encode(obj: Any, *, inline_max: int = 1024, refs: list | None = None) -> list:
    """Frames ``[header, buf1, ...]`` for `obj`; arrays over `inline_max` bytes get their own frame.

    Frame buffers are memoryviews of the caller's arrays (no copy): do not modify those arrays until
    the frames are sent. Raises `ProtocolError` naming the path of a value that cannot be encoded.
    """
    if type(obj) is dict and _KEY_TYPES.issuperset(map(type, obj)):  # _keys_ok(obj, 0), inlined
        values = obj.values()
        if not _LEAVES.issuperset(map(type, values)) and not _values_ok(values, 1):
            raise _explain(obj, None)
    elif not _keys_ok(obj, 0):
        raise _explain(obj, None)
    try:
        enc = _local.encoder  # _encoder() inlined: this is every call's path
    except AttributeError:
        enc = _encoder()
    frames = enc.frames = [b""]
    enc.inline_max = inline_max
    enc.refs = refs if _shm_store is not None else None
    try:
        frames[0] = enc.packer.pack(obj)
    except Exception as exc:
        enc.packer.reset()
        raise _explain(obj, exc) from None
    finally:
        enc.frames = []
        enc.refs = None
    return frames


_CONTAINERS = (dict, list, tuple)
_KEY_TYPES = frozenset([str, int])
_LEAVES = frozenset(
    [str, int, float, bool, type(None), bytes, np.ndarray] + [d.type for d in _DTYPES.values()]
)


def _keys_ok(obj: Any, depth: int) -> bool:
    """Fast pre-check msgpack cannot do: dict keys are str or int, and nesting is bounded.

    Type sets are built with map() so that dicts and lists of plain values cost no Python loop.
    """
    if depth > MAX_DEPTH:
        return False
    if isinstance(obj, dict):
        if not _KEY_TYPES.issuperset(map(type, obj)):
            return False
        values = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    else:
        return True
    return _LEAVES.issuperset(map(type, values)) or _values_ok(values, depth + 1)


def _values_ok(values, depth: int) -> bool:
    """_keys_ok of each container in `values`, at `depth` (encode's top-level dict)."""
    for v in values:
        if type(v) not in _LEAVES and isinstance(v, _CONTAINERS) and not _keys_ok(v, depth):
            return False
    return True


def _leaf_reason(v: Any) -> str | None:
    """Why the non-container value `v` cannot be encoded, or None when it can."""
    t = type(v)
    if t is int:
        return None if _INT_MIN <= v <= _INT_MAX else "int out of the 64-bit range"
    if t in (str, float, bool, type(None), bytes, bytearray, memoryview):
        return None
    checker = _Encoder()
    checker.inline_max = -1  # every array takes the frame path: nothing is copied while checking
    try:
        checker.default(v)
    except Exception as exc:  # _Unsupported, or e.g. a unit that fails to parse
        return str(exc) if isinstance(exc, _Unsupported) else f"{type(exc).__name__}: {exc}"
    return None


def _explain(obj: Any, exc: Exception | None) -> ProtocolError:
    found = _find_problem(obj, "event", 0)
    if found is None:
        return ProtocolError(f"cannot encode value: {exc}")
    path, reason = found
    return ProtocolError(f"cannot encode value at {path}: {reason}")


def _find_problem(obj: Any, path: str, depth: int) -> tuple[str, str] | None:
    if depth > MAX_DEPTH:
        path = path if len(path) < 80 else path[: path.rfind("[", 0, 60)] + "[...]"
        return path, f"nesting deeper than {MAX_DEPTH} levels (is the value cyclic?)"
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) is not str and type(k) is not int:
                why = f"key {k!r} of type {type(k).__name__} is not supported (keys must be str or int)"
                return path, why
            found = _find_problem(v, f"{path}[{k!r}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _find_problem(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    reason = _leaf_reason(obj)
    return (path, reason) if reason else None


def encoded_size(frames: Sequence) -> int:
    """Total bytes of `frames` (header and buffers)."""
    total = 0
    for f in frames:
        total += len(f) if type(f) is bytes else memoryview(f).nbytes
    return total


# ---------------------------------------------------------------------------------------- decode


class _Decoder:
    """Per-thread state of the decode in progress: the frames and the next frame index expected."""

    def __init__(self):
        self.frames: Sequence = ()
        self.next = 1
        self.shm = None
        self.hook = self.ext_hook  # bound once, not on every decode

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == EXT_NDARRAY_FRAME:
            ref = _FRAME_REFS.get(data)  # fast path: a reference met before, its header checked then
            if ref is None:
                return self.array(code, data, 0)
            # self.framed(), inlined for the common case (the next frame, bytes or a memoryview)
            dt, shape, nbytes, index, flat = ref
            frames = self.frames
            if index == self.next and index < len(frames):
                buf = frames[index]
                t = type(buf)
                if t is memoryview:  # C-contiguous: as _as_bytes_view's cast("B"), np.frombuffer
                    buf = buf.toreadonly()  # refuses the others (BufferError: a ProtocolError)
                    size = buf.nbytes
                elif t is bytes:
                    size = len(buf)
                else:
                    buf = _as_bytes_view(buf, readonly=True)
                    size = len(buf)
                if size != nbytes:
                    raise ProtocolError(f"frame {index}: length does not match shape and dtype")
                self.next = index + 1
                if flat:  # 1-D and not bool: the flat array is the result
                    return np.frombuffer(buf, dt)
                return _shaped(np.frombuffer(buf, dt), dt, shape)
            return self.framed(dt, shape, nbytes, index)  # raises
        if code == EXT_NDARRAY_INLINE:
            # self.array() and _array_head(), inlined for a header met before
            head = _HEADS.get(data[: 8 + 8 * data[4]]) if len(data) >= 8 else None
            if head is None:
                return self.array(code, data, 0)
            dt, shape, count, nbytes, hlen, flat = head
            if len(data) - hlen != nbytes:
                raise ProtocolError("inline array: data length does not match shape and dtype")
            if flat:
                return np.frombuffer(data, dt, count, hlen)
            return _shaped(np.frombuffer(data, dt, count, hlen), dt, shape)
        if code == EXT_NDARRAY_SHM:
            return self.array(code, data, 0)
        if code == EXT_NUMPY_SCALAR:
            dt = _dtype(data[:4])
            if len(data) != 4 + dt.itemsize:
                raise ProtocolError("numpy scalar: payload length does not match its dtype")
            arr = np.frombuffer(data, dt, 1, 4)
            if dt is _BOOL:
                _check_bool(arr)
            return arr[0]
        if code == EXT_QUANTITY:
            return self.quantity(data)
        raise ProtocolError(f"unknown msgpack ext code {code}")

    def array(self, code: int, data: bytes, off: int) -> np.ndarray:
        dt, shape, count, nbytes, hlen, flat = _array_head(data, off)
        off += hlen
        if code == EXT_NDARRAY_FRAME:
            (index,) = _U32.unpack_from(data, off)
            if off + 4 != len(data):
                raise ProtocolError("array frame reference: wrong length")
            if off == hlen:  # the whole ext payload (not one inside a quantity): remember it
                _remember(_FRAME_REFS, data, (dt, shape, nbytes, index, flat))
            return self.framed(dt, shape, nbytes, index)
        if code == EXT_NDARRAY_INLINE:
            if len(data) - off != nbytes:
                raise ProtocolError("inline array: data length does not match shape and dtype")
            arr = np.frombuffer(data, dt, count, off)
        elif code == EXT_NDARRAY_SHM:
            offset, nlen = struct.unpack_from("<QH", data, off)
            if off + 10 + nlen != len(data):
                raise ProtocolError("shared-memory reference: wrong length")
            if self.shm is None:
                raise ProtocolError("shared-memory payload where none is expected (another host?)")
            seg = self.shm.attach(data[off + 10:].decode())
            if offset + nbytes > len(seg):
                raise ProtocolError("shared-memory reference beyond its segment")
            arr = np.frombuffer(seg[offset:offset + nbytes], dt)
        else:
            raise ProtocolError(f"quantity: unknown array kind {code}")
        return _shaped(arr, dt, shape)

    def framed(self, dt: np.dtype, shape: tuple, nbytes: int, index: int) -> np.ndarray:
        """The array of a checked frame reference: a read-only view of frame `index`."""
        frames = self.frames
        if index == self.next and index < len(frames):  # the checks of self.frame(), inlined
            self.next = index + 1
            buf = frames[index]
            if type(buf) is not bytes:
                buf = _as_bytes_view(buf, readonly=True)
        else:
            buf = self.frame(index)  # raises
        if len(buf) != nbytes:
            raise ProtocolError(f"frame {index}: length does not match shape and dtype")
        return _shaped(np.frombuffer(buf, dt), dt, shape)

    def frame(self, index: int) -> bytes | memoryview:
        if index != self.next:
            if 1 <= index < self.next:
                raise ProtocolError(f"frame {index} is referenced twice")
            raise ProtocolError(f"frame index {index} out of order or range (expected {self.next})")
        if index >= len(self.frames):
            raise ProtocolError(f"frame index {index} out of range ({len(self.frames)} frames)")
        self.next += 1
        frame = self.frames[index]
        return frame if type(frame) is bytes else _as_bytes_view(frame, readonly=True)

    def quantity(self, data: bytes):
        (ulen,) = _U16.unpack_from(data, 0)
        if ulen > MAX_UNIT_LEN or 3 + ulen > len(data):
            raise ProtocolError("quantity: bad unit length")
        s = data[2 : 2 + ulen].decode()
        kind = data[2 + ulen]
        arr = self.array(kind, data, 3 + ulen + (-(3 + ulen) % 8))
        import astropy.units as u

        unit = _STR_TO_UNIT.get(s)
        if unit is None:
            try:
                unit = u.Unit(s)
            except Exception as exc:
                raise ProtocolError(f"quantity: bad unit string {s!r}") from exc
            if not isinstance(unit, u.UnitBase):
                raise ProtocolError(f"quantity: unsupported unit {s!r}")
            if len(_STR_TO_UNIT) >= 512:
                _STR_TO_UNIT.clear()
            _STR_TO_UNIT[s] = unit
        return u.Quantity(arr, unit, dtype=arr.dtype, copy=False)


# Decoded array headers (dtype, shape) recur event after event: each one is parsed and checked once,
# then found by its raw bytes. _HEADS: header bytes -> (dtype, shape, count, nbytes, header length,
# flat); _FRAME_REFS: whole EXT_NDARRAY_FRAME payload -> (dtype, shape, nbytes, frame index, flat).
# flat: 1-D and not bool, so the flat array from np.frombuffer is the result. Bounded (cleared when
# full), so hostile input cannot grow them.
_HEADS: dict[bytes, tuple] = {}
_FRAME_REFS: dict[bytes, tuple] = {}
_CACHE_MAX = 1024


def _remember(cache: dict, key: bytes, value: tuple) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _shaped(arr: np.ndarray, dt: np.dtype, shape: tuple) -> np.ndarray:
    """The flat decoded array `arr`, checked when bool, in its shape."""
    if dt is _BOOL:  # on the flat array, before the reshape (which cannot fail when count > 0)
        _check_bool(arr)
    return arr if len(shape) == 1 else arr.reshape(shape)


def _array_head(data: bytes, off: int) -> tuple:
    """(dtype, shape, count, nbytes, header length, flat) of the array header at ``data[off:]``,
    flat when the array is 1-D and not bool (the flat decoded array is the result).

    Raises ProtocolError (or struct.error on a short buffer) as the checks below do.
    """
    if len(data) >= off + 8:
        # Fast path. data[off + 4] is the low byte of ndim, which fixes the header length
        # 8 + 8 * ndim; a cached key holds its own ndim field, so a key of that length that
        # matches is exactly a header that passed the checks below before.
        head = _HEADS.get(data[off : off + 8 + 8 * data[off + 4]])
        if head is not None:
            return head
    dtb, ndim = _ND_HEAD.unpack_from(data, off)
    dt = _dtype(dtb)
    if ndim > MAX_NDIM:
        raise ProtocolError(f"array has {ndim} dimensions (at most {MAX_NDIM})")
    shape = _SHAPES[ndim].unpack_from(data, off + 8)
    count = math.prod(shape)
    hlen = 8 + 8 * ndim
    head = dt, shape, count, count * dt.itemsize, hlen, ndim == 1 and dt is not _BOOL
    _remember(_HEADS, data[off : off + hlen], head)
    return head


def _dtype(dtb: bytes) -> np.dtype:
    dt = _BYTES_DTYPE.get(dtb)
    if dt is None:
        raise ProtocolError(f"dtype {dtb!r} is not in the allow-list")
    return dt


def _check_bool(arr: np.ndarray) -> None:
    """Refuse a 1-D bool array holding bytes other than 0 and 1 (numpy would carry them as True)."""
    if arr.size:
        raw = arr.view(_UINT8)
        if raw[raw.argmax()] > 1:  # argmax is several times cheaper than max() for uint8
            raise ProtocolError("bool array holds bytes other than 0 and 1")


def _as_bytes_view(frame: Any, readonly: bool = False) -> memoryview:
    """A flat byte view of a frame (bytes, bytearray, memoryview, or zmq.Frame); with `readonly`,
    a new read-only view."""
    if type(frame) is memoryview:
        # Fast path (the worker's frames are slices of a received blob): already a view, with
        # no .buffer attribute; a flat byte view only needs a new view object, read-only or not.
        if frame.ndim == 1 and frame.format == "B":
            return frame.toreadonly() if readonly else frame
    elif type(frame) is not bytes:
        frame = getattr(frame, "buffer", frame)  # zmq.Frame received with copy=False
    mv = memoryview(frame)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv.toreadonly() if readonly else mv


def _decoder() -> _Decoder:
    try:
        return _local.decoder
    except AttributeError:
        _local.decoder = _Decoder()
        return _local.decoder


def decode(frames: Sequence, *, max_frames: int = 10_000, max_header: int = 64 << 20,
           shm=None) -> Any:
    """The value encoded in `frames`; raises `ProtocolError` (only) when they are not a valid payload.

    Arrays sent in their own frame are zero-copy views of that frame; all arrays are read-only.
    """
    try:
        dec = _local.decoder  # _decoder() inlined: this is every call's path
    except AttributeError:
        dec = _decoder()
    try:
        n = len(frames)
        if not 1 <= n <= max_frames:
            raise ProtocolError(f"payload has {n} frames (expected 1 to {max_frames})")
        header = frames[0]
        if type(header) is not bytes:
            if type(header) is memoryview and header.c_contiguous and header.nbytes <= max_header:
                header = header.tobytes()  # its raw bytes, as _as_bytes_view's cast("B") would give
            else:
                header = _as_bytes_view(header)
                if header.nbytes <= max_header:
                    header = header.tobytes()
        if len(header) > max_header:
            raise ProtocolError(f"header of {len(header)} bytes exceeds max_header={max_header}")
        dec.frames, dec.next = frames, 1
        dec.shm = shm if shm is not None else _shm_store
        # No max_*_len arguments: unpackb bounds each of them by len(header) already (msgpack >= 1.0,
        # "configured automatically from len(packed)"), tighter than max_header, and parsing five
        # keyword arguments is a measurable part of a small event's decode.
        obj = _unpackb(header, ext_hook=dec.hook, raw=False, strict_map_key=False)
        if dec.next != n:
            raise ProtocolError(f"payload has {n - dec.next} unreferenced frame(s)")
        if _may_hold_timestamp(header):
            _reject_timestamps([obj], 0)
        return obj
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack, numpy, struct, unicode errors: all mean a bad payload
        raise ProtocolError(f"malformed payload: {type(exc).__name__}: {exc}") from None
    finally:
        dec.frames = ()
        dec.shm = None


def _may_hold_timestamp(header: bytes) -> bool:
    """Whether ``header`` may hold a msgpack timestamp (ext type -1, 0xff, which msgpack decodes
    itself): its 4, 8 or 12 bytes follow ``d6 ff``, ``d7 ff`` or a length byte 12 and ``ff`` (ext
    8, 16 or 32). A search, not a walk of every decoded event: any 0xff byte (an int -1, a float's
    bytes) used to send the walk over the whole value.

    The search hops from one 0xff byte to the next (``find`` is a memchr) and looks at the byte
    before it: a result event's 32 KB header holds about 40 of them, and the hops took 6 us where
    three substring searches took 77 us, more than half of unpacking it. Past one 0xff in 256
    bytes (arrays of -1 inline, say) the substring searches take over: such a header costs at
    most about 1.2 times what the searches alone did."""
    find = header.find
    i = find(b"\xff", 1)
    for _ in range((len(header) >> 8) + 8):
        if i < 0:
            return False
        if header[i - 1] in _TIMESTAMP_LEADS:
            return True
        i = find(b"\xff", i + 1)
    return b"\xd6\xff" in header or b"\xd7\xff" in header or b"\x0c\xff" in header


_TIMESTAMP_LEADS = frozenset((0xD6, 0xD7, 0x0C))   # the byte before a timestamp's ext type


def _reject_timestamps(obj: Any, depth: int) -> None:
    """msgpack decodes its reserved ext -1 (timestamp) itself, without our ext_hook: find and refuse it."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"nesting deeper than {MAX_DEPTH} levels")
    if type(obj) is dict:
        types = set(map(type, obj)) | set(map(type, obj.values()))
        values = obj.values()
    elif type(obj) is list:
        types = set(map(type, obj))
        values = obj
    else:
        return
    if msgpack.Timestamp in types:
        raise ProtocolError("unsupported msgpack ext code -1 (timestamp)")
    if dict in types or list in types:
        for v in values:
            _reject_timestamps(v, depth + 1)
