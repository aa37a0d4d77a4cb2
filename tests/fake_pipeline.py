"""A fake router for monitor and GUI tests: speaks docs/monitoring.md v=1 exactly, runs nothing.

`FakePipeline` binds an XPUB monitor socket (re-sending graph, context and the latest stats record on
every subscription) and a ROUTER control socket, in a background thread. Stats records are published
every ``interval`` seconds (or on ``publish()``) with counts given by `FakePipeline.counts`, so tests
know what a viewer must show. ``pause``/``resume``/``scale``/``drain``/``stop``/``tap`` are applied and
show up in the next stats record. Samples carry a toy event on a hexagonal camera whose Hillas
parameters are computed in the telescope frame (ctapipe's convention), so the event display can be
checked against them.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from typing import Any

import msgpack
import numpy as np
import zmq

from flow.observe.monitor import fallback_encode

try:
    from flow.wire.codec import encode as _codec_encode
except ImportError:  # pragma: no cover - flow.wire.codec is part of the engine
    _codec_encode = None

DEFAULT_STEPS = [
    {"name": "read", "kind": "producer", "to": ["calibrate"], "workers_min": 1, "workers_max": 1},
    {"name": "calibrate", "kind": "stager", "to": ["clean"], "workers_min": 1, "workers_max": 8},
    {"name": "clean", "kind": "stager", "to": ["hillas"], "workers_min": 1, "workers_max": 4},
    {"name": "hillas", "kind": "stager", "to": ["write", "histo"], "workers_min": 1, "workers_max": 4},
    {"name": "write", "kind": "consumer", "to": [], "workers_min": 1, "workers_max": 1},
    {"name": "histo", "kind": "consumer", "to": [], "workers_min": 1, "workers_max": 1},
]
FOCAL_M = 16.0
TEL_IDS = (1, 2)


def encode_payload(value: Any) -> list[bytes]:
    """flow.wire.codec frames when the codec is there, the monitor's stand-in format otherwise."""
    if _codec_encode is not None:
        return [bytes(f) for f in _codec_encode(value)]
    return fallback_encode(value)


def hex_camera(rings: int = 9, spacing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (m) of a hexagonal camera with rows along x (pointy-top pixels)."""
    xs, ys = [], []
    for q in range(-rings, rings + 1):
        for r in range(max(-rings, -q - rings), min(rings, -q + rings) + 1):
            xs.append(spacing * (q + r / 2.0))
            ys.append(spacing * r * math.sqrt(3) / 2.0)
    return np.array(xs), np.array(ys)


def make_context() -> dict:
    pix_x, pix_y = hex_camera()
    n = len(pix_x)
    camera = {"name": "ToyHex", "pix_x": pix_x, "pix_y": pix_y,
              "pix_area": np.full(n, math.sqrt(3) / 2 * 0.05**2), "pix_type": "hexagon",
              "pix_rotation_deg": 0.0, "cam_rotation_deg": 0.0,
              "neighbors_indptr": np.zeros(n + 1, np.int32), "neighbors_indices": np.zeros(0, np.int32)}
    optics = {"name": "ToyMST", "focal_length": FOCAL_M, "equivalent_focal_length": FOCAL_M}
    tels = {tid: {"position": np.array([100.0 * tid, 0.0, 0.0]), "optics": optics, "camera": camera,
                  "n_samples": 25, "sampling_rate_ghz": 1.0} for tid in TEL_IDS}
    return {"subarray": {"name": "toy", "tels": tels},
            "reference_location": {"lon_deg": -17.89, "lat_deg": 28.76, "height_m": 2200.0}}


def hillas_deg(pix_x: np.ndarray, pix_y: np.ndarray, image: np.ndarray, f: float) -> dict:
    """Moments of ``image`` in ctapipe's telescope frame: lon = atan(y/f), lat = atan(x/f), deg."""
    lon = np.rad2deg(np.arctan(pix_y / f))
    lat = np.rad2deg(np.arctan(pix_x / f))
    w = image / image.sum()
    mlon, mlat = (w * lon).sum(), (w * lat).sum()
    cov = np.cov(np.vstack([lon, lat]), aweights=image, bias=True)
    evals, evecs = np.linalg.eigh(cov)
    psi = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
    psi = (psi + 90.0) % 180.0 - 90.0
    return {"hillas_intensity": float(image.sum()), "hillas_fov_lon": float(mlon),
            "hillas_fov_lat": float(mlat), "hillas_length": float(math.sqrt(evals[1])),
            "hillas_width": float(math.sqrt(evals[0])), "hillas_psi": psi}


def make_event(k: int, context: dict) -> dict:
    """A toy shower image per telescope: a tilted Gaussian ellipse plus noise, cleaned by threshold."""
    rng = np.random.default_rng(k)
    tels = {}
    for tid, tel in context["subarray"]["tels"].items():
        x, y = tel["camera"]["pix_x"], tel["camera"]["pix_y"]
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        ang = rng.uniform(0, math.pi)
        u = (x - cx) * math.cos(ang) + (y - cy) * math.sin(ang)
        v = -(x - cx) * math.sin(ang) + (y - cy) * math.cos(ang)
        image = 300.0 * np.exp(-0.5 * ((u / 0.09) ** 2 + (v / 0.03) ** 2)) + rng.normal(0, 1.5, x.size)
        image = image.astype(np.float32)
        mask = image > 8.0
        clean = np.where(mask, image, 0.0)
        params = hillas_deg(x, y, clean, tel["optics"]["equivalent_focal_length"])
        tels[tid] = {"image": image, "peak_time": np.zeros_like(image), "mask": mask, "params": params}
    return {"obs_id": 1, "event_id": k, "pointing": {"alt": 1.2, "az": 0.0}, "tels": tels}


class FakePipeline:
    """A router stand-in on ``tcp://127.0.0.1`` (random ports unless addresses are given)."""

    def __init__(self, pub_addr: str | None = None, ctl_addr: str | None = None, *,
                 steps: list[dict] | None = None, token: str = "s3cret", run_id: str | None = None,
                 name: str = "fake-dl1", interval: float | None = 0.2, total: int | None = 10_000,
                 tap: str | None = "clean->hillas", rate: int = 100, stop_after: int | None = None,
                 time_step: float | None = None, wobble: bool = False):
        self.steps = [dict(s) for s in (steps or DEFAULT_STEPS)]
        self.token = token
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.name = name
        self.interval = interval
        self.total = total
        self.rate = rate
        self.stop_after = stop_after
        self.time_step = time_step          # fake clock: record k has t = start + k * time_step
        self.wobble = wobble                # vary rates and queues over time (screenshots)
        self.taps: set[str] = {tap} if tap else set()
        self.state = "running"
        self.k = 0                          # stats records published so far
        self.produced_at_k = 0
        self.workers = {s["name"]: s["workers_min"] for s in self.steps}
        self.pending_decisions: list[dict] = []
        self.pending_dead: list[dict] = []
        self.commands: list[dict] = []      # every control request received (tests read it)
        self.subscriptions: list[bytes] = []
        self.last_stats: dict | None = None
        self.context = make_context()
        self._ctx = zmq.Context.instance()
        self.pub = self._ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.ctl = self._ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.pub_addr = self._bind(self.pub, pub_addr)
        self.ctl_addr = self._bind(self.ctl, ctl_addr)
        self._calls: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-pipeline", daemon=True)
        self._start_t = time.time()

    @staticmethod
    def _bind(sock: zmq.Socket, addr: str | None) -> str:
        if addr is None:
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            return f"tcp://127.0.0.1:{port}"
        for _ in range(50):  # the previous run's port may take a moment to free
            try:
                sock.bind(addr)
                return addr
            except zmq.ZMQError:
                time.sleep(0.05)
        sock.bind(addr)
        return addr

    # -- lifecycle
    def start(self) -> FakePipeline:
        self._thread.start()
        self.call(self.publish_graph)
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)
        self.pub.close(linger=0)
        self.ctl.close(linger=0)

    def __enter__(self) -> FakePipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, fn, *args, wait: bool = True):
        """Run ``fn(*args)`` in the socket thread (zmq sockets are not thread-safe)."""
        done: queue.Queue = queue.Queue()
        self._calls.put((fn, args, done))
        return done.get(timeout=5) if wait else None

    def publish(self, n: int = 1) -> dict:
        """Publish ``n`` stats records now (from any thread); returns the last one."""
        return self.call(lambda: [self.publish_stats() for _ in range(n)][-1])

    # -- the loop
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.ctl, zmq.POLLIN)
        next_t = time.monotonic() + (self.interval or 1e9)
        while not self._stop.is_set():
            timeout = max(0, min(10, int((next_t - time.monotonic()) * 1000)))
            events = dict(poller.poll(timeout))
            if self.pub in events:
                self._on_subscription(self.pub.recv())
            if self.ctl in events:
                self._on_control(self.ctl.recv_multipart())
            while not self._calls.empty():
                fn, args, done = self._calls.get()
                done.put(fn(*args))
            if self.interval and time.monotonic() >= next_t:
                next_t = time.monotonic() + self.interval
                if self.stop_after is None or self.k < self.stop_after:
                    self.publish_stats()
                    if self.taps and self.state == "running":
                        self.publish_sample()

    def _on_subscription(self, msg: bytes) -> None:
        if not msg or msg[0] != 1:
            return
        prefix = msg[1:]
        self.subscriptions.append(prefix)
        if b"graph".startswith(prefix):
            self.publish_graph()
        if b"context".startswith(prefix):
            self.publish_context()
        if b"stats".startswith(prefix) and self.last_stats is not None:
            self.pub.send_multipart([b"stats", msgpack.packb(self.last_stats)])

    def _on_control(self, frames: list[bytes]) -> None:
        try:
            req = msgpack.unpackb(frames[-1], raw=False)
            reply = self.apply(req)
        except Exception as exc:  # a malformed request gets an error reply, like the router
            reply = {"ok": False, "error": f"malformed request: {exc}"}
        self.ctl.send_multipart([*frames[:-1], msgpack.packb(reply)])

    # -- control
    def apply(self, req: dict) -> dict:
        self.commands.append(req)
        if req.get("v") != 1:
            return {"ok": False, "error": f"unsupported version {req.get('v')!r}"}
        if req.get("token") != self.token:
            return {"ok": False, "error": "bad token"}
        cmd = req.get("cmd")
        if cmd == "pause":
            self.state = "paused"
        elif cmd == "resume":
            self.state = "running"
        elif cmd == "drain":
            self.state = "draining"
        elif cmd == "stop":
            self.state = "aborted"
        elif cmd == "scale":
            return self._scale(req)
        elif cmd == "tap":
            edges = {f"{s['name']}->{t}" for s in self.steps for t in s["to"]}
            if req.get("edge") not in edges:
                return {"ok": False, "error": f"unknown edge {req.get('edge')!r}"}
            (self.taps.add if req.get("on", True) else self.taps.discard)(req["edge"])
        else:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        return {"ok": True, "error": None}

    def _scale(self, req: dict) -> dict:
        step = next((s for s in self.steps if s["name"] == req.get("step")), None)
        if step is None:
            return {"ok": False, "error": f"unknown step {req.get('step')!r}"}
        lo = req.get("min", step["workers_min"])
        hi = req.get("max", step["workers_max"])
        if lo < 0 or lo > hi:
            return {"ok": False, "error": f"bad bounds min={lo} max={hi}"}
        step["workers_min"], step["workers_max"] = lo, hi
        old = self.workers[step["name"]]
        new = min(max(old, lo), hi)
        if new != old:
            self.workers[step["name"]] = new
            self.pending_decisions.append({"t": self.now(), "step": step["name"], "old": old,
                                           "new": new, "reason": f"bounds set to {lo}-{hi}"})
        return {"ok": True, "error": None}

    # -- publishing
    def now(self) -> float:
        return self._start_t + self.k * self.time_step if self.time_step else time.time()

    def graph_record(self) -> dict:
        return {"v": 1, "type": "graph", "name": self.name, "run_id": self.run_id,
                "steps": [dict(s) for s in self.steps]}

    def publish_graph(self) -> None:
        self.pub.send_multipart([b"graph", msgpack.packb(self.graph_record())])

    def publish_context(self) -> None:
        self.pub.send_multipart([b"context", *encode_payload(self.context)])

    def publish_log(self, message: str, level: str = "INFO") -> None:
        rec = {"v": 1, "type": "log", "t": time.time(), "level": level, "message": message}
        self.pub.send_multipart([b"log", msgpack.packb(rec)])

    def publish_sample(self, edge: str | None = None) -> dict:
        edge = edge or sorted(self.taps)[0]
        event = make_event(self.k, self.context)
        header = {"v": 1, "type": "sample", "edge": edge, "key": f"1:{self.k}"}
        self.pub.send_multipart([b"sample", msgpack.packb(header), *encode_payload(event)])
        return event

    def counts(self, k: int, index: int) -> tuple[int, int]:
        """(in, out) of step number ``index`` after ``k`` advancing records: lag 5 events per hop."""
        n = max(0, self.rate * k - 5 * index)
        return n, max(0, n - 5)

    def publish_stats(self) -> dict:
        if self.state in ("running", "draining"):
            self.produced_at_k += 1
        if self.state == "draining":
            self.state = "finished"
        self.k += 1
        k = self.produced_at_k
        if self.k == 3:  # one scaler decision and one dead letter, to have something to show
            s = self.steps[1]["name"]
            old = self.workers[s]
            self.workers[s] = min(old + 1, self.steps[1]["workers_max"])
            self.pending_decisions.append({"t": self.now(), "step": s, "old": old,
                                           "new": self.workers[s], "reason": "queue growing (12/s)"})
            self.pending_dead.append({"key": "1:42", "step": "clean", "attempts": 3,
                                      "exception": "ValueError: image has NaN pixels",
                                      "traceback": "Traceback (most recent call last):\n  File "
                                      "\"stages/image.py\", line 40, in process\n"
                                      "ValueError: image has NaN pixels\n"})
            self.publish_log("scaler: calibrate 1 -> 2 (queue growing)")
        if self.wobble and self.k % 15 == 0 and self.state == "running":  # the scaler at work
            s = self.steps[2]
            old = self.workers[s["name"]]
            new = old + 1 if (self.k // 15) % 3 else max(s["workers_min"], old - 1)
            new = min(new, s["workers_max"])
            self.workers[s["name"]] = new
            reason = "queue growing" if new > old else "idle workers"
            self.pending_decisions.append({"t": self.now(), "step": s["name"], "old": old, "new": new,
                                           "reason": f"{reason} (busy {50 + self.k % 40} %)"})
        steps, workers = {}, []
        for i, s in enumerate(self.steps):
            n_in, n_out = self.counts(k, i)
            if s["kind"] == "producer":
                n_in = 0
            if s["kind"] == "consumer":
                n_out = 0
            w = self.workers[s["name"]] = min(max(self.workers[s["name"]], s["workers_min"]),
                                             s["workers_max"])
            busy = min(1.0, 0.25 * i)
            rate = float(self.rate if self.state == "running" else 0)
            queue = 3 * i
            if self.wobble:
                phase = self.k / 9.0 + i
                busy = min(1.0, max(0.0, busy + 0.15 * math.sin(phase)))
                rate *= 1 + 0.25 * math.sin(phase) - 0.05 * i
                queue = int(queue * (3 + 2.5 * math.sin(phase / 2)) + (40 if i == 3 else 0))
            steps[s["name"]] = {
                "kind": s["kind"], "in": n_in, "out": n_out,
                "rate": rate, "rate_avg": float(self.rate), "queue": queue, "queue_bytes": queue * 40_000,
                "inflight": w, "workers": w, "workers_min": s["workers_min"],
                "workers_max": s["workers_max"], "busy": busy, "latency_p50_ms": 2.0 + i,
                "latency_p99_ms": 10.0 + 3 * i, "errors": 1 if (s["name"] == "clean" and self.k >= 3) else 0,
                "retries": 0, "dead_letter": 1 if (s["name"] == "clean" and self.k >= 3) else 0,
                "bottleneck": i == 3}
            for j in range(w):
                workers.append({"id": f"{s['name']}-{j}", "step": s["name"], "host": "node-a",
                                "pid": 1000 + 10 * i + j, "cpu": 100.0 * busy, "rss": (80 + i) << 20,
                                "done": n_in // w, "errors": 0, "state": "busy" if busy else "idle"})
        produced = self.rate * k
        total = self.total
        now = self.now()
        elapsed = now - self._start_t
        rec = {"v": 1, "type": "stats", "run_id": self.run_id, "t": now, "state": self.state,
               "elapsed_s": elapsed, "produced": produced, "total": total,
               "progress": min(1.0, produced / total) if total else None,
               "eta_s": (total - produced) / self.rate if total else None,
               "steps": steps, "workers": workers, "decisions": self.pending_decisions,
               "dead_letters": self.pending_dead}
        self.pending_decisions, self.pending_dead = [], []
        self.last_stats = rec
        self.pub.send_multipart([b"stats", msgpack.packb(rec)])
        return rec
