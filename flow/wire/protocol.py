"""The data-socket protocol (docs/protocol.md): a version frame, one-byte commands, one message class.

`Message` is what travels: a command, a small msgpack envelope the router reads, and payload frames it
forwards without decoding. `Message.from_frames` validates everything it reads and raises
`ProtocolError` for anything malformed, so callers can drop and count bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from flow.errors import ProtocolError

VERSION = b"FLW2"

HELLO = b"\x01"
CONFIG = b"\x02"
READY = b"\x03"
DATA = b"\x04"
ACK = b"\x05"
PRODUCE = b"\x06"
CREDIT = b"\x07"
HEARTBEAT = b"\x08"
EOS = b"\x09"
BYE = b"\x0a"
FAILED = b"\x0b"
STOP = b"\x0c"
STATS = b"\x0d"
PAUSE = b"\x0e"
AGENT = b"\x0f"     # agent -> router: {host, cpus}; also its heartbeats carry this
SPAWN = b"\x10"     # router -> agent: {worker, step}
KILL = b"\x11"      # router -> agent: {worker}

NAMES = {
    HELLO: "HELLO", CONFIG: "CONFIG", READY: "READY", DATA: "DATA", ACK: "ACK",
    PRODUCE: "PRODUCE", CREDIT: "CREDIT", HEARTBEAT: "HEARTBEAT", EOS: "EOS", BYE: "BYE",
    FAILED: "FAILED", STOP: "STOP", STATS: "STATS", PAUSE: "PAUSE",
    AGENT: "AGENT", SPAWN: "SPAWN", KILL: "KILL",
}

MAX_ENVELOPE = 16 << 20
_EMPTY = msgpack.packb({})


def pack(obj: Any) -> bytes:
    """msgpack an envelope."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Inverse of `pack`, bounded; raises ProtocolError on anything malformed."""
    if len(data) > MAX_ENVELOPE:
        raise ProtocolError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed envelope: {exc}") from None


def _bytes(frame) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


@dataclass(slots=True)
class Message:
    """One protocol message: command byte, envelope (a dict), payload frames."""

    command: bytes
    envelope: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return NAMES.get(self.command, repr(self.command))

    def to_frames(self) -> list:
        env = pack(self.envelope) if self.envelope else _EMPTY
        return [VERSION, self.command, env, *self.frames]

    def send(self, socket: zmq.Socket, identity: bytes | None = None) -> None:
        frames = self.to_frames()
        if identity is not None:
            frames.insert(0, identity)
        socket.send_multipart(frames, copy=False)

    @classmethod
    def from_frames(cls, frames: list) -> Message:
        """Parse frames (without routing identity); raise ProtocolError if malformed."""
        if len(frames) < 3:
            raise ProtocolError(f"message of {len(frames)} frames, expected at least 3")
        if _bytes(frames[0]) != VERSION:
            raise ProtocolError(f"unknown protocol version {_bytes(frames[0])[:16]!r}")
        command = _bytes(frames[1])
        if command not in NAMES:
            raise ProtocolError(f"unknown command {command[:8]!r}")
        envelope = unpack(_bytes(frames[2]))
        if not isinstance(envelope, dict):
            raise ProtocolError("envelope is not a map")
        return cls(command, envelope, list(frames[3:]))

    @classmethod
    def recv(cls, socket: zmq.Socket, with_identity: bool = False):
        """Receive one message; returns ``Message`` or ``(identity, Message)``."""
        frames = socket.recv_multipart(copy=False)
        if with_identity:
            if not frames:
                raise ProtocolError("empty message")
            return frames[0].bytes, cls.from_frames(frames[1:])
        return cls.from_frames(frames)


SMALL_MAX = 64 << 10  # payload frames up to this size travel packed into one blob frame


def _buffer(frame):
    return frame.buffer if isinstance(frame, zmq.Frame) else frame


def check_items(items: Any, width: int, deep: bool = True) -> list:
    """Validate an envelope's item list: each item a list of ``width`` fields, the first the key
    (str), the last the event's frame sizes (see `pack_payloads`). The router checks the shape only
    (``deep=False``, it never reads sizes unless it splits a batch, and `unpack_payloads` checks them
    then); workers check everything."""
    if type(items) is not list:
        raise ProtocolError("items is not a list")
    for item in items:
        if type(item) is not list or len(item) != width or type(item[0]) is not str:
            raise ProtocolError(f"malformed item {item!r:.80}")
        if not deep:
            continue
        sizes = item[-1]
        if type(sizes) is not list or not sizes:
            raise ProtocolError(f"malformed frame sizes in item {item!r:.80}")
        for n in sizes:
            if (type(n) is not int or n < -1) and type(n) is not str:
                raise ProtocolError(f"malformed frame sizes in item {item!r:.80}")
    return items


MAX_ITEMS = 1 << 20   # events in one message, at most


def pack_items(items: list) -> bytes:
    """A batch's item list as opaque bytes: the msgpack of each item, concatenated (the array
    header is left out, so that batches merge by joining bytes). The router forwards these bytes
    without reading them; `unpack_items` is its inverse."""
    data = msgpack.packb(items, use_bin_type=True)
    n = len(items)
    return data[1 if n < 16 else 3 if n < 65536 else 5:]


def _check_packed_args(data: Any, n: Any) -> None:
    if type(data) is not bytes or type(n) is not int or not 0 <= n <= MAX_ITEMS:
        raise ProtocolError("malformed item list (expected bytes and a count)")


def check_packed(data: Any, n: Any) -> None:
    """ProtocolError unless ``data`` (from `pack_items`) holds exactly ``n`` msgpack objects.

    The router's check of an ACK's or PRODUCE's outputs: it skips over the objects without
    building them (~0.07 µs per item, against ~0.4 µs to unpack), so garbage is refused where
    it arrives and the lease it answers is retried; the items' shapes are checked by the worker
    that unpacks them (`unpack_items`)."""
    _check_packed_args(data, n)
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        for _ in range(n):
            unpacker.skip()
    except Exception as exc:  # OutOfData, FormatError, StackError...
        raise ProtocolError(f"malformed item list: {type(exc).__name__}") from None
    if unpacker.tell() != len(data):
        raise ProtocolError(f"malformed item list: more than {n} items")


def unpack_items(data: Any, n: Any, width: int = 4, deep: bool = True) -> list:
    """The ``n`` items packed by `pack_items`, checked with `check_items`; ProtocolError when
    ``data`` does not hold exactly ``n`` well-formed items."""
    _check_packed_args(data, n)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big") if n < 65536 \
        else b"\xdd" + n.to_bytes(4, "big")
    return check_items(unpack(head + data), width, deep)


def pack_payloads(payloads) -> tuple[list, list]:
    """Events' frame lists -> (sizes per event, message frames ``[blob, big1, big2, ...]``);
    see `split_payloads`."""
    specs, small, big, _ = split_payloads(payloads)
    return specs, [b"".join(small), *big]


def split_payloads(payloads) -> tuple[list, list, list, list]:
    """Events' frame lists -> (sizes per event, frames of the blob, big frames, references).

    Frames up to `SMALL_MAX` bytes are concatenated into one blob (one ZeroMQ frame for a whole
    batch of small events: pyzmq's per-frame cost dominated small events); larger frames travel as
    their own frames without a copy. A size ``n >= 0`` is the next ``n`` bytes of the blob, ``-1``
    the next big frame, a string ``"name:nbytes"`` a shared-memory segment the event references.
    Returns (sizes per event, the small frames to concatenate into the blob, the big frames, the
    shared-memory references).
    """
    small, big, specs, refs = [], [], [], []
    for frames in payloads:
        spec = []
        for f in frames:
            if type(f) is str:  # a shared-memory reference "name:nbytes" (flow/wire/shm.py): no bytes
                spec.append(f)
                refs.append(f)
                continue
            n = len(f)
            if n <= SMALL_MAX:
                small.append(f)
                spec.append(n)
            else:
                big.append(f)
                spec.append(-1)
        specs.append(spec)
    return specs, small, big, refs


def repack(items) -> tuple[list, list]:
    """Like `pack_payloads` for ``(parts, sizes)`` pairs already split (the router's queued items)."""
    small, big = [], []
    for parts, sizes in items:
        for p, n in zip(parts, sizes, strict=False):
            if type(n) is not str:
                (small if n >= 0 else big).append(p)
    return [b"".join(small), *big]


def unpack_payloads(sizes_per_event, frames: list, refs: bool = True) -> list[list]:
    """Inverse of `pack_payloads`: each event's frames, as zero-copy views of the blob and the big
    frames, with its shared-memory references (``refs=False``: without them, as `codec.decode`
    wants the frames). Raises ProtocolError when the sizes do not match the frames."""
    if not frames:
        raise ProtocolError("payload blob frame missing")
    blob = memoryview(_buffer(frames[0])).cast("B")
    pos, big = 0, 1
    out = []
    for sizes in sizes_per_event:
        parts = []
        for n in sizes:
            if type(n) is str:
                if refs:
                    parts.append(n)  # a shared-memory reference travels in the envelope only
            elif n >= 0:
                parts.append(blob[pos:pos + n])
                pos += n
            else:
                if big >= len(frames):
                    raise ProtocolError("items claim more big frames than the message has")
                parts.append(frames[big])
                big += 1
        out.append(parts)
    if pos != len(blob) or big != len(frames):
        raise ProtocolError(f"items claim {pos} blob bytes and {big - 1} big frames, message has "
                            f"{len(blob)} and {len(frames) - 1}")
    return out
