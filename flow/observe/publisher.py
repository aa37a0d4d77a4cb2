"""The router's monitor (XPUB) and control (ROUTER) sockets: docs/monitoring.md.

The XPUB socket sees each new subscription, so a late subscriber gets the graph, the context and the
latest statistics at once. Control commands (pause, resume, scale, drain, stop, tap) must carry the
run's token (and come over CURVE when the run uses keys); each is answered and shows in the next
statistics record. Publishing never blocks the router: a slow subscriber loses old records (SNDHWM).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path

import msgpack
import zmq

log = logging.getLogger("flow.publisher")


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    if endpoint.endswith(":0") or endpoint.endswith(":*"):
        base = endpoint.rsplit(":", 1)[0]
        return f"{base}:{sock.bind_to_random_port(base)}"
    sock.bind(endpoint)
    return endpoint


class Publisher:
    """Monitor and control endpoints of one run."""

    def __init__(self, ctx: zmq.Context, graph, run_id: str, monitor: str, control: str,
                 token_file: str | Path, context_frames: list, security=None,
                 stats_jsonl: str | None = None):
        self.graph = graph
        self.run_id = run_id
        self.context_frames = context_frames
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, 100)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        if security is not None:
            security.apply_server(self.pub)
            security.apply_server(self.ctl)
        self.monitor_endpoint = _bind(self.pub, monitor)
        self.control_endpoint = _bind(self.ctl, control)
        self.token = secrets.token_hex(16)
        self.token_file = Path(token_file)
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.token)
        self.last_stats: dict | None = None
        self.jsonl = open(stats_jsonl, "w", encoding="utf-8") if stats_jsonl else None
        self.taps: dict[tuple[str, str], float] = {}
        self.router = None

    def attach(self, router) -> None:
        self.router = router
        router.extra_sockets = {self.pub: self.on_subscription, self.ctl: self.on_control}
        router.publisher = self

    # -- publishing --------------------------------------------------------------------------
    def _send(self, topic: bytes, record: dict, frames: list | None = None) -> None:
        try:
            self.pub.send_multipart([topic, msgpack.packb(record, use_bin_type=True),
                                     *(frames or [])], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass

    def graph_record(self) -> dict:
        steps = [{"name": s.name, "kind": s.kind, "to": list(s.to),
                  "workers_min": s.workers.min if s.kind == "stager" else 1,
                  "workers_max": s.workers.max if s.kind == "stager" else 1}
                 for s in self.graph.steps]
        return {"v": 1, "type": "graph", "name": self.graph.name, "run_id": self.run_id,
                "steps": steps}

    def publish_stats(self, record: dict) -> None:
        self.last_stats = record
        self._send(b"stats", record)
        if self.jsonl is not None:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def publish_log(self, level: str, message: str) -> None:
        self._send(b"log", {"v": 1, "type": "log", "t": time.time(), "level": level,
                            "message": message})

    def sample_due(self, src: str, dst: str) -> bool:
        """Whether edge src->dst is tapped and its next sample (about one a second) is due; if so,
        the following one is scheduled."""
        now = time.monotonic()
        due = self.taps.get((src, dst))
        if due is None or now < due:
            return False
        self.taps[(src, dst)] = now + 1.0
        return True

    def send_sample(self, src: str, dst: str, key: str, frames: list,
                    segments: dict[str, bytes] | None = None) -> None:
        """Publish one event of edge src->dst; ``segments``: the bytes of the shared-memory
        segments its arrays live in (sent after its frames, named in the header)."""
        try:
            head = {"v": 1, "type": "sample", "edge": f"{src}->{dst}", "key": key}
            if segments:
                head["shm"] = list(segments)
            header = msgpack.packb(head)
            self.pub.send_multipart([b"sample", header, *frames, *(segments or {}).values()],
                                    zmq.NOBLOCK, copy=False)
        except zmq.Again:
            pass

    def on_subscription(self, sock: zmq.Socket) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":  # a (re)subscription: replay the state for the newcomer
                prefix = bytes(msg[1:])  # only the records it subscribed to (b"" matches all)
                if b"graph".startswith(prefix):
                    self._send(b"graph", self.graph_record())
                if self.context_frames and b"context".startswith(prefix):
                    try:
                        sock.send_multipart([b"context", *self.context_frames], zmq.NOBLOCK,
                                            copy=False)
                    except zmq.Again:
                        pass
                if self.last_stats is not None and b"stats".startswith(prefix):
                    self._send(b"stats", self.last_stats)

    # -- control -----------------------------------------------------------------------------
    def on_control(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident, body = frames[0], frames[-1]
            try:
                req = msgpack.unpackb(body, raw=False)
                if not isinstance(req, dict):
                    raise ValueError("request is not a map")
                reply = self.apply(req)
            except Exception as exc:  # a hostile or malformed request is answered, never executed
                reply = {"ok": False, "error": f"bad request: {exc}"}
            sock.send_multipart([ident, *frames[1:-1], msgpack.packb(reply)])

    def apply(self, req: dict) -> dict:
        if not secrets.compare_digest(str(req.get("token", "")), self.token):
            log.warning("control command refused: bad token")
            return {"ok": False, "error": "bad token"}
        r = self.router
        cmd = req.get("cmd")
        if cmd == "pause" or cmd == "resume":
            r.set_paused(cmd == "pause")
        elif cmd == "scale":
            step = req.get("step")
            if step not in r.steps or r.steps[step].kind != "stager":
                return {"ok": False, "error": f"no stager named {step!r}"}
            st = getattr(r.steps[step], "unit", None) or r.steps[step]   # fused: its chain
            lo = int(req.get("min", st.min_workers))
            hi = int(req.get("max", st.max_workers))
            if not 1 <= lo <= hi:
                return {"ok": False, "error": f"need 1 <= min <= max, got {lo}, {hi}"}
            st.min_workers, st.max_workers = lo, hi
            r.set_workers(step, min(max(st.desired, lo), hi))
        elif cmd == "drain" or cmd == "stop":
            r.drain() if cmd == "drain" else r.abort()
        elif cmd == "tap":
            edge = str(req.get("edge", ""))
            src, _, dst = edge.partition("->")
            if src not in r.steps or dst not in r.steps[src].targets:
                return {"ok": False, "error": f"no edge {edge!r}"}
            if req.get("on") is False or req.get("off"):
                self.taps.pop((src, dst), None)
            else:
                self.taps[(src, dst)] = 0.0
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        self.publish_log("INFO", f"control: {cmd} {req.get('step', '')}".strip())
        return {"ok": True, "error": None}

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        self.pub.close(0)
        self.ctl.close(0)
        try:
            self.token_file.unlink()
        except OSError:
            pass
