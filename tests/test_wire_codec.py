"""Tests of flow.wire.codec: exact round-trips, zero-copy frames, encode errors with paths, hostile input."""

from __future__ import annotations

import struct
import subprocess
import sys
import threading

import astropy.units as u
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.errors import ProtocolError
from flow.wire.codec import (
    EXT_NDARRAY_FRAME,
    EXT_NDARRAY_INLINE,
    EXT_NUMPY_SCALAR,
    EXT_QUANTITY,
    decode,
    encode,
    encoded_size,
)

NUMERIC = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"]
DTYPES = [np.dtype(c).newbyteorder(o) for c in NUMERIC for o in "<>"]


def wire(frames):
    """The frames as a receiver sees them: plain bytes, nothing shared with the sender."""
    return [bytes(f) for f in frames]


def roundtrip(obj, **kw):
    return decode(wire(encode(obj, **kw)))


def sample(dtype, shape):
    n = int(np.prod(shape))
    values = np.arange(n) % 7 == 3 if dtype.kind == "b" else (np.arange(n) * 3 - n).astype(dtype)
    if dtype.kind == "c":
        values = values + 1j * values[::-1]
    return np.asarray(values, dtype=dtype).reshape(shape)


def assert_same_array(a, b):
    assert type(b) is np.ndarray
    assert b.dtype == a.dtype and b.dtype.str == a.dtype.str
    assert b.shape == a.shape
    np.testing.assert_array_equal(b, a)
    assert not b.flags.writeable


# ------------------------------------------------------------------------------ round-trips


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inline_max", [1 << 20, -1], ids=["inline", "frame"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (4, 3, 2)], ids=str)
def test_array_roundtrip_every_dtype_byteorder_shape(dtype, inline_max, shape):
    a = sample(dtype, shape)
    frames = encode({"a": a}, inline_max=inline_max)
    assert len(frames) == (1 if inline_max > 0 else 2)
    assert_same_array(a, decode(wire(frames))["a"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(60, dtype="f8").reshape(6, 10)[::2, 1::3],
        lambda: np.asfortranarray(np.arange(24, dtype=">i4").reshape(4, 6)),
        lambda: np.arange(2000, dtype="u2")[::-1],
        lambda: np.broadcast_to(np.arange(3.0), (1000, 3)),
    ],
    ids=["strided", "fortran", "reversed", "broadcast"],
)
@pytest.mark.parametrize("inline_max", [1 << 20, 0])
def test_noncontiguous_arrays_roundtrip(make, inline_max):
    a = make()
    out = roundtrip([a], inline_max=inline_max)[0]
    assert_same_array(a, out)
    assert out.flags.c_contiguous


def test_inline_threshold_is_nbytes():
    assert len(encode(np.zeros(128, "f8"))) == 1  # 1024 bytes: inline
    assert len(encode(np.zeros(129, "f8"))) == 2  # 1032 bytes: own frame
    assert len(encode(np.zeros(10), inline_max=0)) == 2


def test_plain_values_roundtrip():
    event = {
        "obs_id": 1,
        "event_id": 2**64 - 1,
        "neg": -(2**63),
        "pi": 3.141592653589793,
        "nan": float("inf"),
        "ok": True,
        "no": False,
        "none": None,
        "name": "Ünïcödé ✓",
        "blob": bytes(range(256)) * 30,
        "empty": {},
        "list": [1, "a", [2.5, None]],
        "tels": {
            1: {"image": np.ones(1855, "f4"), "params": {"hillas_intensity": 12.5}},
            -4: {"tuple": (1, (2, 3))},
        },
    }
    out = roundtrip(event)
    assert out["tels"][-4] == {"tuple": [1, [2, 3]]}  # tuples come back as lists
    assert set(out["tels"]) == {1, -4} and all(type(k) is int for k in out["tels"])
    for key in event:
        if key != "tels":
            assert out[key] == event[key] and type(out[key]) is type(event[key]), key
    assert_same_array(event["tels"][1]["image"], out["tels"][1]["image"])


@pytest.mark.parametrize("dtype", [np.dtype(c) for c in NUMERIC], ids=str)
def test_numpy_scalars_roundtrip_as_numpy_scalars(dtype):
    value = sample(dtype, (3,))[1]
    out = roundtrip({"v": value, "l": [value]})
    assert type(out["v"]) is type(value) and out["v"].dtype == dtype
    assert out["v"] == value and type(out["l"][0]) is type(value)


@pytest.mark.parametrize(
    "q",
    [
        3.5 * u.TeV,
        np.float32(2.0) * u.m / u.s**2,
        np.arange(10.0) * u.deg,
        np.arange(2000.0).reshape(40, 50) * u.ph / (u.cm**2 * u.s * u.TeV),  # frame-backed
        u.Quantity(np.arange(5, dtype=">i4"), u.g / u.cm**2, dtype=">i4"),
        u.Quantity(np.zeros((0, 3), "f4"), u.m),
        u.Quantity(7, u.dimensionless_unscaled, dtype="i8"),
        np.arange(4.0) * u.Unit("1000 m"),
    ],
    ids=lambda q: f"{q.dtype}-{q.shape}-{q.unit}",
)
def test_quantity_roundtrip_exact(q):
    out = roundtrip({"q": q})["q"]
    assert type(out) is u.Quantity
    assert out.unit == q.unit and out.dtype == q.dtype and out.shape == q.shape
    np.testing.assert_array_equal(out.value, q.value)
    assert out.isscalar == q.isscalar


def test_quantity_subclass_travels_as_quantity():
    from astropy.coordinates import Angle

    out = roundtrip(Angle([1.0, 2.0], u.deg))
    assert type(out) is u.Quantity and out.unit == u.deg
    np.testing.assert_array_equal(out.value, [1.0, 2.0])


def test_plain_events_do_not_import_astropy():
    code = (
        "import sys, numpy as np; from flow.wire.codec import encode, decode; "
        "decode(encode({'a': np.ones(3), 'b': [1, 2.0], 3: np.float32(1)})); "
        "assert 'astropy' not in sys.modules, 'astropy imported'"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).parent.parent),
    )


def test_encoded_size_counts_every_byte():
    a = np.zeros((100, 100), "f8")
    frames = encode({"a": a, "b": b"x" * 10})
    assert encoded_size(frames) == len(frames[0]) + a.nbytes
    assert encoded_size(wire(frames)) == encoded_size(frames)


# ------------------------------------------------------------------------------ zero-copy


def test_encode_does_not_copy_large_arrays():
    a = np.arange(100_000, dtype="f4")
    frames = encode({"a": a})
    assert np.shares_memory(np.frombuffer(frames[1], np.uint8), a)


def test_decoded_large_array_is_a_readonly_view_of_its_frame():
    a = np.arange(100_000, dtype=">f8").reshape(100, 1000)
    received = wire(encode({"a": a}))
    out = decode(received)["a"]
    assert np.shares_memory(out, np.frombuffer(received[1], np.uint8))
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0] = 1


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_decode_accepts_buffer_frames_and_keeps_arrays_readonly(kind):
    a = np.arange(5000, dtype="i2")
    frames = [kind(bytearray(f)) for f in encode([a])]
    out = decode(frames)[0]
    assert_same_array(a, out)
    assert np.shares_memory(out, np.frombuffer(frames[1], np.uint8))


def test_zmq_frames_zero_copy_end_to_end():
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://codec-test")
        b.connect("inproc://codec-test")
        event = {
            "wf": np.arange(200_000, dtype="u2").reshape(2, 100, 1000),
            "q": np.ones(500) * u.m,
        }
        a.send_multipart(encode(event), copy=False)
        frames = b.recv_multipart(copy=False)
        out = decode(frames)
        assert_same_array(event["wf"], out["wf"])
        assert np.shares_memory(out["wf"], np.frombuffer(frames[1].buffer, np.uint8))
        assert out["q"].unit == u.m and out["q"].shape == (500,)
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_threads_encode_and_decode_independently():
    errors = []

    def work(seed):
        try:
            for i in range(200):
                ev = {"seed": seed, "i": i, "a": np.full(300 + seed, i, "f8"), "b": [np.int16(i)]}
                out = decode(wire(encode(ev, inline_max=1024 * (i % 2))))
                assert out["seed"] == seed and out["i"] == i and out["a"].shape == (300 + seed,)
                assert (out["a"] == i).all() and out["b"][0] == i
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ------------------------------------------------------------------------------ encode errors


@pytest.mark.parametrize(
    "event, path, words",
    [
        (
            {"tels": {1: {"x": {1, 2}}}},
            "event['tels'][1]['x']",
            "type set is not supported (convert it to a list",
        ),
        ({"a": [0, object()]}, "event['a'][1]", "type object is not supported"),
        ({"a": np.array([1, None], dtype=object)}, "event['a']", "dtype object is not supported"),
        ({"a": np.zeros(2, "M8[s]")}, "event['a']", "dtype datetime64[s] is not supported"),
        ({"a": np.zeros(2, "m8[s]")}, "event['a']", "is not supported"),
        ({"a": np.zeros(2, [("x", "f4"), ("y", "O")])}, "event['a']", "is not supported"),
        ({"a": np.zeros(2, [("x", "f4"), ("y", "i4")])}, "event['a']", "is not supported"),
        ({"a": np.array(["ab"])}, "event['a']", "dtype <U2 is not supported"),
        ({"a": np.datetime64("2020-01-01")}, "event['a']", "numpy scalar type datetime64"),
        ({"a": np.zeros(2, "f16")}, "event['a']", "is not supported"),
        ({1.5: 1}, "event", "key 1.5 of type float is not supported"),
        (
            {"t": {np.int64(3): 1}},
            "event['t']",
            "key np.int64(3) of type int64 is not supported (keys must be str or int)",
        ),
        ({"t": {(1, 2): 1}}, "event['t']", "key (1, 2) of type tuple"),
        ({"n": [2**64]}, "event['n'][0]", "int out of the 64-bit range"),
        ({"n": -(2**63) - 1}, "event['n']", "int out of the 64-bit range"),
        ({"m": np.ma.array([1, 2])}, "event['m']", "masked arrays are not supported"),
        ({"q": 5 * u.ABmag}, "event['q']", "is not supported"),
        ({"s": np.str_("x")}, "event['s']", "numpy scalar type str_"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_encode_rejects_with_path(event, path, words):
    with pytest.raises(ProtocolError) as info:
        encode(event)
    message = str(info.value)
    assert message.startswith(f"cannot encode value at {path}: "), message
    assert words in message, message


def test_encode_rejects_cycles_and_absurd_nesting():
    cyclic = []
    cyclic.append(cyclic)
    with pytest.raises(ProtocolError, match="nesting deeper than"):
        encode({"a": cyclic})
    deep = 0
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ProtocolError, match="nesting deeper than"):
        encode(deep)


def test_encode_error_leaves_the_encoder_usable():
    with pytest.raises(ProtocolError):
        encode({"a": np.ones(2000), "b": {1, 2}})
    assert roundtrip({"a": 1}) == {"a": 1}


# ------------------------------------------------------------------------------ decode rejects


def ext(code, payload):
    return msgpack.packb(msgpack.ExtType(code, payload))


def nd(dtype: bytes, shape, tail=b"", code=EXT_NDARRAY_INLINE):
    head = struct.pack("<4sI", dtype.ljust(4, b"\0"), len(shape)) + struct.pack(
        f"<{len(shape)}Q", *shape
    )
    return ext(code, head + tail)


@pytest.mark.parametrize(
    "frames, words",
    [
        ([], "0 frames"),
        ([b"\xc1"], "malformed"),  # never-used msgpack byte
        ([b"\x92\x01"], "malformed"),  # truncated array
        ([msgpack.packb(1) + b"\x00"], "extra data"),
        ([ext(9, b"abc")], "unknown msgpack ext code 9"),
        ([msgpack.packb(msgpack.Timestamp(5, 0))], "timestamp"),
        ([msgpack.packb([1, {"t": msgpack.Timestamp(5, 7)}])], "timestamp"),
        ([msgpack.packb([-1, msgpack.Timestamp(2**40, 7)])], "timestamp"),
        ([b"\x91\xc8\x00\x0c\xff" + bytes(12)], "timestamp"),          # ext 16, 12 bytes
        ([b"\x91\xc9\x00\x00\x00\x0c\xff" + bytes(12)], "timestamp"),  # ext 32, 12 bytes
        # a timestamp after 300 ints -1 (0xff bytes): past the hops, the substring search finds it
        ([msgpack.packb([-1] * 300 + [msgpack.Timestamp(5, 7)])], "timestamp"),
        ([msgpack.packb([-1] * 3 + [msgpack.Timestamp(5, 7)])], "timestamp"),
        ([nd(b"|O8", (1,), b"\0" * 8)], "not in the allow-list"),
        ([nd(b"|V8", (1,), b"\0" * 8)], "not in the allow-list"),
        ([nd(b"<M8", (1,), b"\0" * 8)], "not in the allow-list"),
        ([nd(b"<f8", (2,), b"\0" * 8)], "does not match"),
        ([nd(b"<f8", (1,), b"\0" * 7)], "does not match"),
        ([nd(b"<f8", (2**63, 2), b"\0" * 8)], "does not match"),  # a negative dim as int64
        ([nd(b"<f8", (2**32, 2**32, 2**32), b"\0" * 8)], "does not match"),
        ([nd(b"<f8", (0, 2**62))], "malformed"),  # too big for numpy even though empty
        ([nd(b"<f8", (1,) * 33, b"\0" * 8)], "33 dimensions"),
        ([nd(b"|b1", (2,), b"\x01\x07")], "bool array"),
        ([ext(EXT_NUMPY_SCALAR, b"<f8\0" + b"\0" * 4)], "does not match"),
        ([ext(EXT_NUMPY_SCALAR, b"|O8\0" + b"\0" * 8)], "allow-list"),
        ([nd(b"<f8", (1,), struct.pack("<I", 1), EXT_NDARRAY_FRAME)], "out of range"),
        (
            [nd(b"<f8", (1,), struct.pack("<I", 2), EXT_NDARRAY_FRAME), b"\0" * 8, b"\0" * 8],
            "out of order",
        ),
        (
            [
                msgpack.packb(
                    [msgpack.ExtType(2, nd(b"<f8", (1,), struct.pack("<I", 1), 2)[3:])] * 2
                ),
                b"\0" * 8,
            ],
            "referenced twice",
        ),
        ([nd(b"<f8", (1,), struct.pack("<I", 1), EXT_NDARRAY_FRAME), b"\0" * 9], "frame 1: length"),
        (
            [nd(b"<f8", (1,), struct.pack("<I", 1), EXT_NDARRAY_FRAME), b"\0" * 8, b""],
            "unreferenced",
        ),
        ([msgpack.packb({"a": 1}), b"extra"], "unreferenced"),
        ([msgpack.packb({"a": [1, 2]})[:-1]], "malformed"),
        ([b"\x81\x92\x01\x02\x01"], "malformed"),  # a list as map key
        ([b"\xa2\xff\xfe"], "malformed"),  # invalid utf-8
        ([b"\x91" * 5000], "malformed"),  # absurd nesting
        ([b"\xdd\xff\xff\xff\xff"], "malformed"),  # array of 4G elements, no data
        (["not bytes"], "malformed"),
        ([None], "malformed"),
        ([b"\x90", 3], "unreferenced"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_decode_rejects(frames, words):
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert words.lower() in str(info.value).lower(), str(info.value)


def quantity_ext(unit: bytes, kind=EXT_NDARRAY_INLINE):
    prefix = struct.pack("<H", len(unit)) + unit + bytes([kind])
    prefix += b"\0" * (-len(prefix) % 8)
    body = struct.pack("<4sI", b"<f8\0", 0) + b"\0" * 8
    return ext(EXT_QUANTITY, prefix + body)


@pytest.mark.parametrize(
    "unit, words",
    [
        (b"m**", "bad unit string"),
        (b"not_a_unit", "bad unit string"),
        (b"\xff\xfe", "malformed"),
        (b"m" * 300, "bad unit length"),
    ],
)
def test_decode_rejects_bad_units(unit, words):
    with pytest.raises(ProtocolError, match=words):
        decode([quantity_ext(unit)])


def test_decode_quantity_of_good_unit_and_bad_kind():
    assert decode([quantity_ext(b"m / s2")]) == 0 * u.m / u.s**2
    with pytest.raises(ProtocolError, match="unknown array kind"):
        decode([quantity_ext(b"m", kind=7)])


def test_decode_limits():
    frames = encode({"blob": b"x" * 5000, "a": np.ones(1000)})
    with pytest.raises(ProtocolError, match="max_header"):
        decode(frames, max_header=4000)
    with pytest.raises(ProtocolError, match="frames"):
        decode(frames, max_frames=1)
    assert decode(frames, max_frames=2, max_header=6000)["blob"] == b"x" * 5000


# ------------------------------------------------------------------------------ fuzz

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Messages that exercise every ext code, as seeds for mutation.
SEEDS = [
    wire(
        encode(
            {
                "a": 1,
                "tels": {1: {"img": np.arange(10, dtype="f4"), "m": np.ones(3, bool)}},
                "s": np.int16(-3),
                "q": np.arange(3.0) * u.m / u.s,
                "l": [1.5, None, b"xy", "z"],
            }
        )
    ),
    wire(
        encode(
            {
                "wf": np.arange(600, dtype=">u2").reshape(2, 300),
                "q": np.ones(200) * u.TeV,
                "z": np.zeros((0, 4), "c8"),
            },
            inline_max=64,
        )
    ),
    wire(encode([np.float16(1.5), np.array(3 + 4j), 3 * u.deg])),
]


def decode_or_protocol_error(frames):
    try:
        decode(frames)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=300), st.lists(st.binary(max_size=64), max_size=3))
def test_fuzz_random_headers(header, rest):
    decode_or_protocol_error([header, *rest])


@FUZZ
@given(st.sampled_from(SEEDS), st.data())
def test_fuzz_mutated_messages(seed, data):
    frames = [bytearray(f) for f in seed]
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(
            st.sampled_from(["flip", "set", "truncate", "extend", "drop", "dup", "swap"])
        )
        i = data.draw(st.integers(0, len(frames) - 1)) if frames else 0
        if op in ("flip", "set") and frames and frames[i]:
            j = data.draw(st.integers(0, len(frames[i]) - 1))
            frames[i][j] = (
                (frames[i][j] ^ (1 << data.draw(st.integers(0, 7))))
                if op == "flip"
                else data.draw(st.integers(0, 255))
            )
        elif op == "truncate" and frames:
            del frames[i][data.draw(st.integers(0, len(frames[i]))) :]
        elif op == "extend" and frames:
            frames[i] += data.draw(st.binary(min_size=1, max_size=16))
        elif op == "drop" and frames:
            del frames[i]
        elif op == "dup" and frames:
            frames.insert(i, bytearray(frames[i]))
        elif op == "swap" and len(frames) > 1:
            frames[0], frames[-1] = frames[-1], frames[0]
    decode_or_protocol_error([bytes(f) for f in frames])


# Values built from the allowed kinds, for a round-trip property.
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.sampled_from(DTYPES).flatmap(lambda dt: st.integers(0, 300).map(lambda n: sample(dt, (n,)))),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=4),
    ),
    max_leaves=12,
)


def assert_equal_values(a, b):
    if isinstance(a, np.ndarray):
        assert_same_array(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_equal_values(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_values(x, y)
    else:
        assert type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(values, st.sampled_from([0, 64, 1024]))
def test_fuzz_roundtrip_of_allowed_values(value, inline_max):
    frames = encode(value, inline_max=inline_max)
    assert_equal_values(value, decode(wire(frames)))
    for cut in (1, len(frames[0]) // 2):  # and a truncated header never escapes as another error
        decode_or_protocol_error([frames[0][:-cut], *frames[1:]])


def test_decode_header_caches_keep_every_check():
    """decode remembers array headers and frame references it has checked (flow.wire.codec._HEADS,
    _FRAME_REFS): a remembered one still gets the frame checks, and the caches stay bounded."""
    from flow.wire import codec

    good = wire(encode({"a": np.arange(300, dtype="f8"), "b": np.ones((3, 2), bool)}))
    for _ in range(2):  # the second decode takes the cached paths
        out = decode(good)
        assert_same_array(np.arange(300, dtype="f8"), out["a"])
    with pytest.raises(ProtocolError, match="frame 1: length"):
        decode([good[0], good[1][:-8]])
    with pytest.raises(ProtocolError, match="out of range"):
        decode(good[:1])
    with pytest.raises(ProtocolError, match="bool array"):
        decode(wire(encode({"b": np.frombuffer(b"\x01\x00\x01\x02\x00\x01", bool).reshape(3, 2)})))
    for n in range(codec._CACHE_MAX + 10):  # more distinct shapes than the caches hold
        a = np.zeros((n % 7 + 1, n), "u1")
        assert decode(wire(encode([a, a[:1]], inline_max=0)))[0].shape == a.shape
    assert len(codec._HEADS) <= codec._CACHE_MAX and len(codec._FRAME_REFS) <= codec._CACHE_MAX


# ------------------------------------------------------------------------------ wire format pin

# Exact bytes of a few fixed values (docs/codec.md). A change here changes the wire format: peers
# built from another commit would no longer understand each other. Frames are given in hex.
WIRE_PINS = [
    (
        {"i": 5, "data": np.arange(40, dtype=np.uint8)},
        16,
        [
            "82a16905a464617461c714027c75310001000000280000000000000001000000",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021222324252627",
        ],
    ),
    (
        {"i": 5, "x": 1.5, "name": "abc", "arr": np.arange(4, dtype=np.float32),
         "t": (1, None, True, b"z"), 7: -(2**63)},
        1024,
        [
            "86a16905a178cb3ff8000000000000a46e616d65a3616263a3617272c720013c66340001000000040000"
            "0000000000000000000000803f0000004000004040a1749401c0c3c4017a07d38000000000000000",
        ],
    ),
    (
        {"tel": {"1": {"img": np.arange(3, dtype=">f4"), "m": np.array([True, False, True])}},
         "w": np.arange(6, dtype="i2").reshape(2, 3)[:, ::2], "s": np.int16(-3),
         "c": np.complex64(1 + 2j)},
        4,
        [
            "84a374656c81a13182a3696d67c714023e66340001000000030000000000000001000000a16dc713017c"
            "623100010000000300000000000000010001a177c71c023c69320002000000020000000000000002000000"
            "0000000002000000a173c706033c693200fdffa163c70c033c6338000000803f00000040",
            "000000003f80000040000000",
            "0000020003000500",
        ],
    ),
    (
        [np.arange(2.0) * u.m / u.s, 2**64 - 1],
        1024,
        [
            "92c7280405006d202f2073013c66380001000000020000000000000000000000000000000000000000"
            "00f03fcfffffffffffffffff",
        ],
    ),
    (
        [np.arange(3.0) * u.TeV],
        8,
        [
            "91c71c0403005465560200003c66380001000000030000000000000001000000",
            "0000000000000000000000000000f03f0000000000000040",
        ],
    ),
]


@pytest.mark.parametrize("value, inline_max, expected", WIRE_PINS)
def test_wire_format_is_pinned(value, inline_max, expected):
    for _ in range(2):  # the second encode and decode take the cached paths
        frames = encode(value, inline_max=inline_max)
        assert [bytes(f).hex() for f in frames] == expected
        back = decode([memoryview(bytes.fromhex(h)) for h in expected])
        assert [bytes(f).hex() for f in encode(back, inline_max=inline_max)] == expected


@pytest.mark.parametrize(
    "header",
    [b"\xdd\x7f\xff\xff\xff", b"\xdf\x7f\xff\xff\xff", b"\xdb\x7f\xff\xff\xff", b"\xc6\x7f\xff\xff\xff",
     b"\xc9\x7f\xff\xff\xff\x01", b"\x93\x01", b"\x81\xa1k"],
)
def test_decode_bounds_declared_lengths_by_the_header(header):
    """decode passes no max_*_len to msgpack: unpackb bounds them by the header's length itself."""
    with pytest.raises(ProtocolError, match="malformed"):
        decode([header])
    with pytest.raises(ProtocolError, match="malformed"):
        decode([memoryview(header)])


def test_encode_frame_ext_cache_keeps_positions_lengths_and_layout():
    """encode caches the ext of a 1-D array in its own frame by (dtype, length, frame index):
    each array still gets its own reference, strided arrays are copied, the caches stay bounded."""
    from flow.wire import codec

    a = np.arange(3000, dtype="f8")
    for _ in range(2):
        arrays = [a, a[::2], a[:1500].astype(">i4"), a[1:], np.arange(2000) % 2 == 0] * 15  # > 64
        out = decode(wire(encode(arrays, inline_max=64)))
        for x, y in zip(arrays, out, strict=True):
            assert_same_array(x, y)
    for n in range(codec._CACHE_MAX + 10):
        assert decode(wire(encode([np.zeros(n + 1, "u2")], inline_max=0)))[0].shape == (n + 1,)
    assert all(len(c) <= codec._CACHE_MAX for c in codec._FRAME_EXTS.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 6), st.sampled_from([b"", b"\xd6", b"\xd7", b"\x0c"]),
       st.booleans())
def test_the_timestamp_search_sees_what_a_substring_search_sees(data, runs, lead, lead_last):
    """`_may_hold_timestamp` hops between 0xff bytes, then falls back to substring searches: on
    any bytes, with few or many 0xff, a timestamp's lead byte early or late, it says what the
    three substring searches say."""
    from flow.wire.codec import _may_hold_timestamp
    tail = lead + b"\xff" if lead_last else b""
    header = (b"" if lead_last else lead) + data + b"\xff" * (runs * 40) + data[::-1] + tail
    expected = b"\xd6\xff" in header or b"\xd7\xff" in header or b"\x0c\xff" in header
    assert _may_hold_timestamp(header) is expected
