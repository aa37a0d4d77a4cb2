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

from .errors import ProtocolError

VERSION = b"FLW1"

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


def check_items(items: Any, n_frames: int, width: int) -> list:
    """Validate an envelope's item list: each item a list of ``width`` fields, the last the number of
    payload frames it owns; the counts must add up to ``n_frames``."""
    if not isinstance(items, list):
        raise ProtocolError("items is not a list")
    total = 0
    for item in items:
        if not isinstance(item, list) or len(item) != width:
            raise ProtocolError(f"malformed item {item!r:.80}")
        n = item[-1]
        if not isinstance(n, int) or n < 1 or not isinstance(item[0], str):
            raise ProtocolError(f"malformed item {item!r:.80}")
        total += n
    if total != n_frames:
        raise ProtocolError(f"items claim {total} frames, message has {n_frames}")
    return items
