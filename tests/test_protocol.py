"""flow.protocol: framing, validation of envelopes and item lists."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as hs

from flow import protocol as P
from flow.errors import ProtocolError


def test_round_trip_over_a_real_socket_pair():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://proto-test")
    b.connect("inproc://proto-test")
    try:
        P.Message(P.DATA, {"lease": 7, "items": [["k", "0", [1, 5000]]]}, [b"hx" * 1]).send(a)
        msg = P.Message.recv(b)
        assert msg.command == P.DATA and msg.name == "DATA"
        assert msg.envelope == {"lease": 7, "items": [["k", "0", [1, 5000]]]}
        assert [bytes(f) for f in msg.frames] == [b"hx"]
    finally:
        a.close(0)
        b.close(0)


@pytest.mark.parametrize("frames, message", [
    ([b"FLW1", P.ACK], "at least 3"),
    ([b"FLW9", P.ACK, b"\x80"], "version"),
    ([b"FLW1", b"\xff", b"\x80"], "unknown command"),
    ([b"FLW1", P.ACK, b"\xc1"], "malformed envelope"),
    ([b"FLW1", P.ACK, msgpack.packb([1, 2])], "not a map"),
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
