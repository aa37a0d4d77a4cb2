"""Shared-memory payloads: large arrays cross processes on one host without being copied per hop.

A producer or worker that encodes an array of at least ``threshold`` bytes writes it once into a
segment under /dev/shm and sends only its name; every later step maps the segment read-only, and an
array that a step passes on unchanged is sent on by reference again (no copy at all). The router
counts the queued and leased batches that reference each segment and unlinks a segment when none
does (so a worker crash leaks nothing: its leases, and their segments, are requeued), and unlinks
whatever is left of its run when it ends. Segments are named ``<prefix><pid>-<n>`` where the prefix
holds the run id, so nothing outside the run can be mapped through a crafted name.

Used only with the default ``ipc://`` data endpoint: workers on other hosts (agents) get plain frames.
"""

from __future__ import annotations

import itertools
import mmap
import os
import weakref

import numpy as np

from .errors import ProtocolError

SHM_DIR = "/dev/shm"


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def ref_size(ref: str) -> int:
    """Bytes of a ``name:nbytes`` reference."""
    return int(ref.rpartition(":")[2])


def ref_name(ref: str) -> str:
    return ref.rpartition(":")[0]


class ShmStore:
    """Creates, maps and recognises this run's segments (one per process)."""

    def __init__(self, prefix: str, threshold: int):
        if not prefix or "/" in prefix:
            raise ValueError("a shared-memory prefix is a plain file name prefix")
        self.prefix = prefix
        self.threshold = threshold
        self._ids = itertools.count()
        self._maps: dict[int, tuple[str, int, int]] = {}   # id(mmap) -> (name, address, size)

    def _path(self, name: str) -> str:
        if not name.startswith(self.prefix) or "/" in name or len(name) > 200:
            raise ProtocolError(f"shared-memory name {name[:60]!r} is not of this run")
        return os.path.join(SHM_DIR, name)

    def put(self, arr: np.ndarray) -> tuple[str, int]:
        """(name, offset) of a segment holding ``arr`` (C-contiguous): the segment it already lives
        in when it was received that way, else a new one it is copied into."""
        hit = self.lookup(arr)
        if hit is not None:
            return hit
        name = f"{self.prefix}{os.getpid()}-{next(self._ids)}"
        fd = os.open(self._path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, arr.nbytes)
            mm = mmap.mmap(fd, arr.nbytes)
        finally:
            os.close(fd)
        np.frombuffer(mm, np.uint8)[:] = arr.reshape(-1).view(np.uint8)
        mm.close()
        return name, 0

    def attach(self, name: str) -> memoryview:
        """A read-only view of segment ``name`` (mapped; unmapped when its arrays are gone)."""
        try:
            fd = os.open(self._path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise ProtocolError(f"shared-memory segment {name!r} does not exist") from None
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        if mm is None:
            return memoryview(b"")
        address = np.frombuffer(mm, np.uint8).__array_interface__["data"][0]
        self._maps[id(mm)] = (name, address, size)
        weakref.finalize(mm, self._maps.pop, id(mm), None)
        return memoryview(mm)

    def lookup(self, arr: np.ndarray) -> tuple[str, int] | None:
        """(name, offset) when ``arr`` is a contiguous view into a segment this process mapped."""
        base = arr
        while isinstance(base, np.ndarray):
            base = base.base
        if not isinstance(base, memoryview) or not isinstance(base.obj, mmap.mmap):
            return None
        entry = self._maps.get(id(base.obj))
        if entry is None or not arr.flags.c_contiguous:
            return None
        name, address, size = entry
        offset = arr.__array_interface__["data"][0] - address
        if offset < 0 or offset + arr.nbytes > size:
            return None
        return name, offset

    def unlink(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def read(self, name: str) -> bytes:
        """The bytes of a segment (for dead letters, which must outlive the run)."""
        with open(self._path(name), "rb") as fh:
            return fh.read()

    def cleanup(self) -> int:
        """Unlink every segment of this run's prefix; returns how many there were."""
        n = 0
        try:
            names = os.listdir(SHM_DIR)
        except OSError:
            return 0
        for name in names:
            if name.startswith(self.prefix):
                self.unlink(name)
                n += 1
        return n


class BytesShm:
    """A stand-in store resolving segment names from saved bytes (replaying dead letters)."""

    def __init__(self, segments: dict[str, bytes]):
        self.segments = segments

    def attach(self, name: str) -> memoryview:
        try:
            return memoryview(self.segments[name])
        except KeyError:
            raise ProtocolError(f"shared-memory segment {name!r} was not saved") from None
