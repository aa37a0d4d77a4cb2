"""Client side of the control protocol (docs/monitoring.md): pause, resume, scale, drain, stop, tap.

`ControlClient` sends one command and waits for the reply with a timeout ("lazy pirate": on timeout the
socket is closed and reopened, so a late reply is never taken for the next answer). It never raises zmq
or msgpack errors: a failure comes back as a reply dict. `read_token` reads the run's control token.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import zmq

from flow.errors import FlowError
from flow.observe.monitor import CONTROL_COMMANDS, VERSION, apply_security


class ControlClient:
    """Send control commands to a router's control socket; every call returns the reply dict."""

    def __init__(self, address: str, token: str, keys_dir: str | None = None, *,
                 timeout_s: float = 3.0, context: zmq.Context | None = None):
        self.address = address
        self.token = token
        self.keys_dir = keys_dir
        self.timeout_s = timeout_s
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._lock = threading.Lock()

    def _open(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        apply_security(sock, self.keys_dir)
        sock.connect(self.address)
        return sock

    def send(self, cmd: str, **kw: Any) -> dict:
        """Send ``cmd`` with arguments (``step``, ``min``, ``max``, ``edge``, ``on``); return the reply."""
        if cmd not in CONTROL_COMMANDS:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        request = {"v": VERSION, "cmd": cmd, "token": self.token}
        request.update({k: v for k, v in kw.items() if v is not None})
        with self._lock:
            if self._sock is None:
                self._sock = self._open()
            try:
                self._sock.send_multipart([b"", msgpack.packb(request, use_bin_type=True)])
                if not self._sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                    self._reset()
                    return {"ok": False, "error": f"no reply from {self.address} in {self.timeout_s} s"}
                frames = self._sock.recv_multipart()
            except zmq.ZMQError as exc:
                self._reset()
                return {"ok": False, "error": f"control socket error: {exc}"}
        try:
            reply = msgpack.unpackb(frames[-1], raw=False)
        except Exception as exc:
            return {"ok": False, "error": f"malformed reply: {exc}"}
        if not isinstance(reply, dict) or "ok" not in reply:
            return {"ok": False, "error": "malformed reply"}
        reply.setdefault("error", None)
        return reply

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._reset()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_token(path: str | None) -> str:
    """The control secret from the router's token file ('' when no file is given)."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise FlowError(f"cannot read the control token file {path}: {exc.strerror}") from exc
