"""flow.wire.protocol: framing, validation of envelopes and item lists."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as hs

from flow.errors import ProtocolError
from flow.wire import protocol as P


def test_round_trip_over_a_real_socket_pair():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://proto-test")
    b.connect("inproc://proto-test")
    try:
        items = P.pack_items([["k", "0", "", [2]]])
        P.Message(P.DATA, {"lease": 7, "items": items, "n": 1}, [b"hx" * 1]).send(a)
        msg = P.Message.recv(b)
        assert msg.command == P.DATA and msg.name == "DATA"
        assert msg.envelope == {"lease": 7, "items": items, "n": 1}
        assert P.unpack_items(msg.envelope["items"], 1) == [["k", "0", "", [2]]]
        assert [bytes(f) for f in msg.frames] == [b"hx"]
    finally:
        a.close(0)
        b.close(0)


@pytest.mark.parametrize("frames, message", [
    ([P.VERSION, P.ACK], "at least 3"),
    ([b"FLW9", P.ACK, b"\x80"], "version"),
    ([P.VERSION, b"\xff", b"\x80"], "unknown command"),
    ([P.VERSION, P.ACK, b"\xc1"], "malformed envelope"),
    ([P.VERSION, P.ACK, msgpack.packb([1, 2])], "not a map"),
])
def test_malformed_messages_are_rejected(frames, message):
    with pytest.raises(ProtocolError, match=message):
        P.Message.from_frames(frames)


def test_check_items_validates_sizes():
    assert P.check_items([["a", "0", [3, -1]], ["b", "0", [1]]], 3)
    for bad in ("x", [["a", "0"]], [[1, "0", [1]]], [["a", "0", []]], [["a", "0", [-2]]],
                [["a", "0", "1"]], [["a", "0", [1.5]]]):
        with pytest.raises(ProtocolError):
            P.check_items(bad, 3)


def test_pack_and_unpack_payloads_round_trip():
    big = b"B" * (P.SMALL_MAX + 1)
    payloads = [[b"h1", b"x" * 10], [b"h2", big], [b"h3"]]
    sizes, frames = P.pack_payloads(payloads)
    assert sizes == [[2, 10], [2, -1], [2]]
    assert len(frames) == 2 and bytes(frames[0]) == b"h1" + b"x" * 10 + b"h2h3"
    back = P.unpack_payloads(sizes, frames)
    assert [[bytes(f) for f in ev] for ev in back] == [[bytes(f) for f in ev] for ev in payloads]
    with pytest.raises(ProtocolError, match="claim"):
        P.unpack_payloads([[2, 10], [2, -1], [3]], frames)
    with pytest.raises(ProtocolError, match="big frames"):
        P.unpack_payloads([[2, 10, -1, -1]], frames)


@settings(max_examples=300, deadline=None)
@given(hs.lists(hs.binary(max_size=64), max_size=6))
def test_fuzz_parser_only_raises_protocol_error(frames):
    try:
        msg = P.Message.from_frames(frames)
        items = P.check_items(msg.envelope.get("items", []), 3)
        P.unpack_payloads([it[2] for it in items], msg.frames)
    except ProtocolError:
        pass


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 65536])
def test_pack_items_round_trips_and_merges_by_joining(n):
    items = [[str(i), "0.1", "" if i % 3 else "b", [32, 7168] if i % 2 else [1, -1, "seg:9"]]
             for i in range(n)]
    packed = P.pack_items(items)
    assert P.unpack_items(packed, n) == items
    k = n // 3   # two batches merged in one lease: their packed items joined
    assert P.unpack_items(P.pack_items(items[:k]) + P.pack_items(items[k:]), n) == items


@pytest.mark.parametrize("data, n, message", [
    (P.pack_items([["a", "0", "", [1]]]), 2, "malformed envelope"),                 # too few
    (P.pack_items([["a", "0", "", [1]]]) + b"\x01", 1, "malformed envelope"),      # extra bytes
    (P.pack_items([["a", "0", "", [1]]]), -1, "count"),
    (P.pack_items([["a", "0", "", [1]]]), 1 << 21, "count"),
    ([["a", "0", "", [1]]], 1, "count"),                                          # not packed
    (P.pack_items([[1, "0", "", [1]]]), 1, "malformed item"),                       # key not str
    (P.pack_items([["a", "0", "", []]]), 1, "frame sizes"),
    (P.pack_items([["a", "0", ""]]), 1, "malformed item"),
])
def test_unpack_items_rejects_what_does_not_hold_exactly_n_items(data, n, message):
    with pytest.raises(ProtocolError, match=message):
        P.unpack_items(data, n)


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=200), hs.integers(min_value=-2, max_value=40))
def test_fuzz_unpack_items_only_raises_protocol_error(data, n):
    try:
        items = P.unpack_items(data, n)
    except ProtocolError:
        return
    assert len(items) == n


def test_check_packed_counts_objects_without_building_them():
    packed = P.pack_items([["a", "0", "", [1]], ["b", "0", "", [2]]])
    P.check_packed(packed, 2)
    P.check_packed(b"", 0)
    for data, n in ((packed, 1), (packed, 3), (packed[:-1], 2), (b"\xc1" * 4, 1), (packed, -1),
                    ("x", 1)):
        with pytest.raises(ProtocolError, match="item list"):
            P.check_packed(data, n)


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=200), hs.integers(min_value=0, max_value=40))
def test_fuzz_check_packed_only_raises_protocol_error(data, n):
    try:
        P.check_packed(data, n)
    except ProtocolError:
        pass
