"""The dead-letter file: events a step failed on ``max_retries`` times, kept so they can be replayed.

JSON lines, one per event: ``key``, ``path``, ``step``, ``exception``, ``traceback``, ``attempts``,
``time``, and ``payload`` (base64 of the msgpack list of the event's encoded frames, see
docs/codec.md) so that `flow replay` can run it again once the step is fixed.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack

from flow.errors import DataError


@dataclass(frozen=True)
class DeadLetter:
    key: str
    path: str
    step: str
    exception: str
    traceback: str
    attempts: int
    frames: tuple[bytes, ...]
    graph: str | None = None
    time: float = 0.0
    segments: dict | None = None     # shared-memory segments the event referenced, by name


def _frame_bytes(frame) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") and not isinstance(frame, bytes) else bytes(frame)


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file, opened lazily on the first one."""

    def __init__(self, path: str | Path, graph_file: str | None = None):
        self.path = Path(path)
        self.graph_file = graph_file
        self.count = 0
        self._fh = None
        self.recent: list[dict] = []  # records not yet taken by `take_recent` (the monitor)

    def write(self, key: str, path: str, step: str, exception: str, traceback: str,
              attempts: int, frames, segments: dict[str, bytes] | None = None) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        payload = msgpack.packb([_frame_bytes(f) for f in frames], use_bin_type=True)
        record = {"key": key, "path": path, "step": step, "exception": exception,
                  "traceback": traceback, "attempts": attempts, "time": time.time(),
                  "graph": self.graph_file, "payload": base64.b64encode(payload).decode("ascii")}
        if segments:  # shared-memory payloads (flow/wire/shm.py) are saved: the segments do not outlive
            record["shm"] = {k: base64.b64encode(v).decode("ascii") for k, v in segments.items()}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        self.count += 1
        if len(self.recent) < 100:  # bounded: a monitor that never takes them costs nothing
            self.recent.append({"key": key, "step": step, "exception": exception,
                                "traceback": traceback, "attempts": attempts})

    def take_recent(self) -> list[dict]:
        """The dead letters written since the previous call (for the statistics record)."""
        out, self.recent = self.recent, []
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_dead_letters(path: str | Path) -> Iterator[DeadLetter]:
    """Yield the records of a dead-letter file; a malformed line is a DataError naming its line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dead-letter file")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                frames = msgpack.unpackb(base64.b64decode(rec["payload"]), raw=False)
                yield DeadLetter(key=rec["key"], path=rec.get("path", ""), step=rec["step"],
                                 exception=rec.get("exception", ""),
                                 traceback=rec.get("traceback", ""),
                                 attempts=int(rec.get("attempts", 0)),
                                 frames=tuple(frames), graph=rec.get("graph"),
                                 time=rec.get("time", 0.0),
                                 segments={k: base64.b64decode(v)
                                           for k, v in rec.get("shm", {}).items()} or None)
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: malformed dead-letter record ({exc})") from None
