"""Client side of the monitoring protocol (docs/monitoring.md, v=1).

`MonitorClient` subscribes to a router's monitor socket, decodes records in a background thread and
keeps only what a viewer needs: the latest graph, stats record, context and sample, a short history per
step, and the logs, scaler decisions and dead letters not yet taken. When it falls behind it drains the
socket and keeps the newest records (ZMQ ``CONFLATE`` does not work with multipart messages). It
reconnects by itself; a new ``run_id`` resets its state.

Its control twin, `ControlClient`, is in flow/observe/control.py.

It never raises zmq or msgpack errors: malformed records are counted and dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from flow.errors import FlowError, ProtocolError

VERSION = 1
TOPICS = (b"graph", b"context", b"stats", b"log", b"sample")
CONTROL_COMMANDS = ("pause", "resume", "scale", "drain", "stop", "tap")
STATES = ("starting", "running", "paused", "draining", "finished", "aborted")

# A minimal stand-in for flow.wire.codec (numpy arrays as extra frames), recognised by its first frame.
# Only the test publisher uses it, when flow.wire.codec is not importable; real routers use flow.wire.codec.
FALLBACK_MAGIC = b"\x00flow-monitor-fallback-codec-1"


# ----------------------------------------------------------------------------------------- decoding
def _fallback_decode(frames: Sequence[bytes]) -> Any:
    buffers = [bytes(f) for f in frames[2:]]

    def hook(obj: dict) -> Any:
        spec = obj.get("__nd__")
        if spec is None:
            return obj
        index, dtype, shape = spec
        return np.frombuffer(buffers[index], dtype=np.dtype(dtype)).reshape(shape)

    return msgpack.unpackb(frames[1], object_hook=hook, strict_map_key=False, raw=False)


def fallback_encode(value: Any) -> list[bytes]:
    """Encode ``value`` (dicts, lists, scalars, numpy arrays) in the stand-in format (tests only)."""
    buffers: list[bytes] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            buffers.append(np.ascontiguousarray(obj).tobytes())
            return {"__nd__": [len(buffers) - 1, obj.dtype.str, list(obj.shape)]}
        if isinstance(obj, np.generic):
            return obj.item()
        raise TypeError(f"cannot encode {type(obj).__name__}")

    head = msgpack.packb(value, default=default, use_bin_type=True)
    return [FALLBACK_MAGIC, head, *buffers]


def decode_payload(frames: Sequence[bytes], shm_names: Sequence[str] = ()) -> Any:
    """Decode the codec frames of a sample event or a context (``flow.wire.codec.decode``).

    A sampled event whose arrays travelled through shared memory carries the bytes of those
    segments as its last frames, one per name in ``shm_names``."""
    if not frames:
        raise ProtocolError("empty payload")
    shm = None
    if shm_names:
        if not isinstance(shm_names, list) or len(shm_names) >= len(frames) or \
                not all(isinstance(n, str) for n in shm_names):
            raise ProtocolError("sample: malformed shared-memory segment list")
        from flow.wire.shm import BytesShm  # noqa: PLC0415
        k = len(frames) - len(shm_names)
        shm = BytesShm({n: bytes(f) for n, f in zip(shm_names, frames[k:], strict=True)})
        frames = frames[:k]
    if bytes(frames[0]) == FALLBACK_MAGIC:
        return _fallback_decode(frames)
    try:
        from flow.wire.codec import decode  # noqa: PLC0415 - written by another module, optional here
    except ImportError as exc:
        raise ProtocolError("flow.wire.codec is not available to decode the payload") from exc
    try:
        return decode(list(frames), shm=shm) if shm is not None else decode(list(frames))
    except FlowError:
        raise
    except Exception as exc:  # the codec's own errors, whatever they are
        raise ProtocolError(f"cannot decode payload: {exc}") from exc


def unpack_record(frame: bytes, expected_type: str) -> dict:
    """msgpack map -> dict, checked for version and type; `ProtocolError` otherwise."""
    try:
        rec = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError(f"malformed {expected_type} record: {exc}") from exc
    if not isinstance(rec, dict):
        raise ProtocolError(f"{expected_type} record is not a map")
    if rec.get("v") != VERSION:
        raise ProtocolError(f"{expected_type} record of version {rec.get('v')!r}, expected {VERSION}")
    if rec.get("type", expected_type) != expected_type:
        raise ProtocolError(f"record of type {rec.get('type')!r} on topic {expected_type!r}")
    return rec


def topo_layers(steps: Iterable[dict]) -> dict[str, int]:
    """Layer of each step: the longest path (in edges) from any step without inputs (the producers)."""
    steps = list(steps)
    names = [s["name"] for s in steps]
    to = {s["name"]: [t for t in s.get("to", []) if t in names] for s in steps}
    layer = dict.fromkeys(names, 0)
    for _ in range(len(names)):  # Bellman-Ford style relaxation; a cycle just stops growing
        changed = False
        for a in names:
            for b in to[a]:
                if layer[b] < layer[a] + 1 and layer[a] + 1 < len(names):
                    layer[b] = layer[a] + 1
                    changed = True
        if not changed:
            break
    return layer


def apply_security(sock: zmq.Socket, keys_dir: str | None) -> None:
    """Make ``sock`` a CURVE client with the keys in ``keys_dir`` (no-op when None)."""
    if not keys_dir:
        return
    try:
        from flow.wire.security import ClientSecurity  # noqa: PLC0415 - optional module
    except ImportError as exc:
        raise FlowError(f"CURVE keys given ({keys_dir}) but flow.wire.security is not available") from exc
    ClientSecurity(keys_dir).apply_client(sock)


# ------------------------------------------------------------------------------------ monitor state
@dataclass
class MonitorState:
    """A copy of what the client knows, taken with `MonitorClient.snapshot`."""

    run_id: str | None = None
    graph: dict | None = None
    stats: dict | None = None
    context: Any = None
    sample: tuple[dict, Any] | None = None       # (header, decoded event)
    history: list[tuple[float, dict]] = field(default_factory=list)  # (t, {step: (rate, queue, workers)})
    decisions: list[dict] = field(default_factory=list)   # all of this run (bounded)
    version: int = 0               # increases whenever something above changed
    last_record: float = 0.0       # time.monotonic() of the last record of any topic
    received: int = 0
    dropped: int = 0               # records skipped unread because newer ones were queued
    malformed: int = 0
    alive: bool = False            # a record arrived in the last ``stale_s`` seconds


@dataclass
class MonitorEvents:
    """Records to show once (taken with `MonitorClient.take_events`)."""

    logs: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    dead_letters: list[dict] = field(default_factory=list)
    run_changed: bool = False


class MonitorClient:
    """Subscribe to ``address`` (``tcp://host:port``) and keep the newest monitoring state.

    Use ``start()`` for a background thread, or call ``poll()`` yourself. ``snapshot()`` and
    ``take_events()`` are thread-safe and never block on the network.
    """

    def __init__(self, address: str, keys_dir: str | None = None, *, stale_s: float = 3.0,
                 reconnect_s: float = 10.0, history_s: float = 300.0, max_drain: int = 200,
                 context: zmq.Context | None = None):
        self.address = address
        self.keys_dir = keys_dir
        self.stale_s = stale_s
        self.reconnect_s = reconnect_s
        self.history_s = history_s
        self.max_drain = max_drain
        self._ctx = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._state = MonitorState()
        self._events = MonitorEvents()
        self._history: deque[tuple[float, dict]] = deque()
        self._decisions: deque[dict] = deque(maxlen=1000)
        self._sock: zmq.Socket | None = None
        self._connected_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.reconnects = 0

    # -- lifecycle
    def start(self) -> MonitorClient:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="flow-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self._close()

    close = stop

    def __enter__(self) -> MonitorClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll(100)
        self._close()

    # -- socket
    def _open(self) -> None:
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.setsockopt(zmq.RECONNECT_IVL, 200)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        apply_security(sock, self.keys_dir)
        for topic in TOPICS:  # graph first: the router re-sends graph, context, stats in this order
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(self.address)
        self._sock = sock
        self._connected_at = time.monotonic()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def reconnect(self) -> None:
        """Drop the socket and subscribe again (the router then re-sends graph and context)."""
        self._close()
        self.reconnects += 1
        self._open()

    # -- reading
    def poll(self, timeout_ms: int = 100) -> int:
        """Wait up to ``timeout_ms`` for records, drain what is queued, apply it; return how many."""
        if self._sock is None:
            self._open()
        assert self._sock is not None
        n = 0
        try:
            if self._sock.poll(timeout_ms, zmq.POLLIN):
                batch = []
                while len(batch) < self.max_drain:
                    try:
                        batch.append(self._sock.recv_multipart(zmq.NOBLOCK, copy=True))
                    except zmq.Again:
                        break
                n = self._apply(batch)
        except zmq.ZMQError:
            self.reconnect()
            return 0
        now = time.monotonic()
        silent_since = max(self._state.last_record, self._connected_at)
        if now - silent_since > self.reconnect_s:  # peer vanished without TCP noticing: start over
            self.reconnect()
        with self._lock:
            alive = self._state.last_record > 0 and now - self._state.last_record < self.stale_s
            if alive != self._state.alive:
                self._state.alive = alive
                self._state.version += 1
        return n

    def _apply(self, batch: list[list[bytes]]) -> int:
        # Keep the newest of each replaceable topic; logs and every stats record's decisions and dead
        # letters are kept. Only the newest sample is decoded (the expensive part).
        last_sample = max((i for i, m in enumerate(batch) if m[0] == b"sample"), default=-1)
        with self._lock:
            st = self._state
            for i, msg in enumerate(batch):
                topic = msg[0]
                if topic == b"sample" and i != last_sample:
                    st.dropped += 1
                    continue
                try:
                    self._apply_one(topic, msg)
                except ProtocolError:
                    st.malformed += 1
                    continue
                st.received += 1
                st.last_record = time.monotonic()
            st.version += 1
        return len(batch)

    def _apply_one(self, topic: bytes, msg: list[bytes]) -> None:
        st = self._state
        if topic == b"graph":
            rec = unpack_record(msg[1] if len(msg) > 1 else b"", "graph")
            self._check_run(rec.get("run_id"))
            st.graph = rec
        elif topic == b"stats":
            rec = unpack_record(msg[1] if len(msg) > 1 else b"", "stats")
            self._check_run(rec.get("run_id"))
            st.stats = rec
            self._record_history(rec)
            decisions = rec.get("decisions") or []
            self._decisions.extend(decisions)
            self._events.decisions.extend(decisions)
            self._events.dead_letters.extend(rec.get("dead_letters") or [])
        elif topic == b"log":
            rec = unpack_record(msg[1] if len(msg) > 1 else b"", "log")
            self._events.logs.append(rec)
            del self._events.logs[:-2000]
        elif topic == b"sample":
            header = unpack_record(msg[1] if len(msg) > 1 else b"", "sample")
            st.sample = (header, decode_payload(msg[2:], header.get("shm") or ()))
        elif topic == b"context":
            st.context = decode_payload(msg[1:])
        else:
            raise ProtocolError(f"unknown topic {topic[:20]!r}")

    def _check_run(self, run_id: str | None) -> None:
        st = self._state
        if run_id is None or run_id == st.run_id:
            return
        first = st.run_id is None
        st.run_id = run_id
        if not first:  # a new run on the same address: forget the old one
            st.graph = st.stats = st.context = st.sample = None
            self._history.clear()
            self._decisions.clear()
            self._events = MonitorEvents(logs=self._events.logs)
            self._events.run_changed = True

    def _record_history(self, rec: dict) -> None:
        t = float(rec.get("t") or time.time())
        steps = rec.get("steps") or {}
        point = {name: (s.get("rate") or 0.0, s.get("queue") or 0, s.get("workers") or 0)
                 for name, s in steps.items()}
        self._history.append((t, point))
        while self._history and self._history[0][0] < t - self.history_s:
            self._history.popleft()

    # -- reading the state (any thread)
    def snapshot(self) -> MonitorState:
        """A copy of the current state (cheap: records are shared, lists copied)."""
        with self._lock:
            st = self._state
            return MonitorState(
                run_id=st.run_id, graph=st.graph, stats=st.stats, context=st.context,
                sample=st.sample, history=list(self._history), decisions=list(self._decisions),
                version=st.version, last_record=st.last_record, received=st.received,
                dropped=st.dropped, malformed=st.malformed, alive=st.alive)

    def take_events(self) -> MonitorEvents:
        """Logs, decisions and dead letters that arrived since the previous call."""
        with self._lock:
            events, self._events = self._events, MonitorEvents()
            return events

    def wait_for(self, predicate, timeout: float = 5.0) -> MonitorState:
        """Block until ``predicate(snapshot())`` is true (tests, scripts); `TimeoutError` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"monitor condition not met within {timeout} s")
            if self._thread is None:
                self.poll(50)
            else:
                time.sleep(0.02)
