"""Shared-memory payloads: large arrays cross processes on one host without being copied per hop.

A producer or worker that encodes an array of at least ``threshold`` bytes writes it once into a
segment under /dev/shm and sends only its name; every later step maps the segment read-only, and an
array that a step passes on unchanged is sent on by reference again (no copy at all). The router
counts the queued and leased batches that reference each segment; when none does, it releases the
segment (so a worker crash leaks nothing: its leases, and their segments, are requeued), and it
removes whatever is left of its run when the run ends. Segments are named ``<prefix><pid>-<token>-<n>``
where the prefix holds the run id, so nothing outside the run can be mapped through a crafted name.

**Recycling.** A fresh segment costs far more than the copy into it (the kernel hands out zeroed
pages and each first touch faults: ~5 ms for 4 MB against ~0.2 ms for the copy). So each process
keeps a pool of the segments it created (``<prefix><pid>-<token>-p<n>``, up to ``pool_bytes``: twice the
router's ``queue_limit_bytes`` plus 64 MB, about what can be in flight beyond the queues, and at
most a quarter of the free space of /dev/shm; mapped
read-write): the router *releases* a pooled segment by renaming it to ``<name>~free``, and its
creator takes it back with one rename before writing the next array into the same, already mapped
pages. A segment is released only when no batch references it **and** no process still maps it:
after each lease a worker reports the segments whose arrays it kept (``pins`` in its ACK: a
consumer buffering images, say) and later the ones it let go (``unpins``), so recycled pages are
never seen changing under an array someone holds. Unpooled segments are unlinked as before.

Used only with the default ``ipc://`` data endpoint: workers on other hosts (agents) get plain frames.

About 430 lines in one module on purpose: `ShmStore` is one process's view of its run's segments,
and creating, recycling, arenas, mapping and pinning share its state (the pool, the open arena,
the live mappings); the reference helpers before it are what the router and codec read of a name.
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import secrets
import threading
import weakref

import numpy as np

from flow.errors import ProtocolError

SHM_DIR = "/dev/shm"
FREE = "~free"          # suffix of a released pooled segment, waiting for its creator
POOL_TRIES = 16         # pooled segments a put() tries to take back before making another (a try is one
#                         failed rename; a new 4 MB segment is ~1000 page faults, 2-12 us each on a VM)
ARENA_BYTES = 4 << 20   # arrays of one message share a segment of this size (see ShmStore.put)
MAP_CACHE = 4096        # mappings of other processes' pooled segments kept for re-use ...
MAP_CACHE_BYTES = 256 << 20   # ... and their bytes, at most


def available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def shm_free_bytes() -> int:
    """Bytes free under /dev/shm (0 when it cannot be read)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def ref_size(ref: str) -> int:
    """Bytes of a ``name:nbytes`` reference."""
    return int(ref.rpartition(":")[2])


def ref_name(ref: str) -> str:
    return ref.rpartition(":")[0]


def is_pooled(name: str) -> bool:
    """A segment its creator recycles (``<prefix><pid>-<token>-p<n>``)."""
    return name.rpartition("-")[2].startswith("p")


def creator_pid(name: str, prefix: str) -> int:
    """The pid of the process that created segment ``<prefix><pid>-...`` (0 if unreadable)."""
    pid = name[len(prefix):].partition("-")[0]
    return int(pid) if pid.isdigit() else 0


def capacity(nbytes: int) -> int:
    """The size of a pooled segment for ``nbytes``: rounded up to 1/8 of its power of two (at
    most 12.5 % unused), so that events of slightly varying size share segments."""
    if nbytes <= 1 << 16:
        return 1 << 16
    step = 1 << (nbytes.bit_length() - 4)
    return -(-nbytes // step) * step


class ShmStore:
    """Creates, maps and recognises this run's segments (one per process)."""

    def __init__(self, prefix: str, threshold: int, pool_bytes: int = 0, pins: bool = False):
        if not prefix or "/" in prefix:
            raise ValueError("a shared-memory prefix is a plain file name prefix")
        self.prefix = prefix
        self.threshold = threshold
        self.pool_bytes = pool_bytes
        self.pins = pins                       # track attached segments (workers report them)
        self._ids = itertools.count()
        # the names this process creates: a random token after the pid, so that a name is never
        # used for two files (not even by a later process that gets the same pid), and a mapping
        # kept by name (attach) is always of the right file
        self._own = f"{prefix}{os.getpid()}-{secrets.token_hex(4)}-"
        self._maps: dict[int, tuple[str, int, int]] = {}   # id(attach view) -> (name, address, size)
        self._mapped: collections.OrderedDict = collections.OrderedDict()  # name -> (mmap, size)
        self._mapped_bytes = 0
        # pinning: which attached segments this process still maps (finalizers may run on the
        # ZeroMQ garbage-collector thread, hence the lock)
        self._lock = threading.Lock()
        self._live: dict[str, int] = {}        # name -> live read-only mappings here
        self._touched: list[str] = []          # names attached since take_touched()
        self._pinned: set[str] = set()         # reported kept, not yet reported let go
        self._released: collections.deque = collections.deque()
        # recycling: segments this process created and keeps mapped, by capacity
        self._pool: dict[int, collections.deque] = {}
        self._pooled = 0
        self._arena: tuple[str, mmap.mmap] | None = None   # (name, mapping) being filled by put
        self._arena_pos = 0
        self._arena_pinned = False             # the open arena is pinned at the router by us
        self._sealed_pinned: list[str] = []    # arenas sealed since they were pinned: to unpin
        self.arena_bytes = 0                   # bytes put into arenas so far (see `arena_room`)
        self.reused = 0                        # puts served by a recycled segment

    def _path(self, name: str) -> str:
        if not name.startswith(self.prefix) or "/" in name or len(name) > 200:
            raise ProtocolError(f"shared-memory name {name[:60]!r} is not of this run")
        return os.path.join(SHM_DIR, name)

    def put(self, arr: np.ndarray) -> tuple[str, int]:
        """(name, offset) of a segment holding ``arr`` (C-contiguous): the segment it already lives
        in when it was received that way, else the current arena (arrays up to ``ARENA_BYTES/2``)
        or a recycled or new segment of its own, which it is copied into.

        The arena: the arrays of consecutive messages share a segment, so recycling one (a rename
        by the router, a rename back here) is paid per arena, not per array (150 KB events: one
        segment per 27 events instead of one each). An arena is filled up across messages and
        pinned at the router while it is (`arena_pins`), so it is never recycled while it is
        still being written; `seal` ends it when the next array does not fit."""
        hit = self.lookup(arr)
        if hit is not None:
            return hit
        n = arr.nbytes
        if n > ARENA_BYTES // 2:
            name, mm = self._segment(n)
            np.frombuffer(mm, np.uint8, n)[:] = arr.reshape(-1).view(np.uint8)
            if not is_pooled(name):
                mm.close()
            return name, 0
        if self._arena is None or self._arena_pos + n > len(self._arena[1]):
            self.seal()
            self._arena = self._segment(ARENA_BYTES)
            self._arena_pos = 0
        name, mm = self._arena
        offset = self._arena_pos
        np.frombuffer(mm, np.uint8, n, offset)[:] = arr.reshape(-1).view(np.uint8)
        self._arena_pos = offset + n + (-n % 64)    # the next array 64-byte aligned
        self.arena_bytes += self._arena_pos - offset
        return name, offset

    def arena_room(self) -> int:
        """Bytes left in the arena being filled (-1: none is). A producer ends its message when
        the next event would not fit: a message spilling into a second arena leaves most of it
        empty, and the arena, sealed with the message, holds those pages until it is released
        (1 MB events in 4 MB messages took two arenas each: twice the pool and its page faults)."""
        return -1 if self._arena is None else len(self._arena[1]) - self._arena_pos

    def seal(self) -> None:
        """End the current arena: the next `put` starts another (see `put`). A full arena is
        sealed by `put`; an arena pinned at the router (`arena_pins`) is unpinned with the next
        message."""
        if self._arena is not None:
            name, mm = self._arena
            if self._arena_pinned:
                self._sealed_pinned.append(name)
                self._arena_pinned = False
            if not is_pooled(name):
                mm.close()
            self._arena = None

    def arena_pins(self) -> tuple[list[str], list[str]]:
        """(pins, unpins) for the message being sent: an arena outlives the message whose arrays
        opened it, and the next messages' arrays fill it up, so this process pins it at the router
        (``pins`` in the envelope of its first message) until it is sealed (``unpins`` in the
        envelope of the next message: only a message, never a STATS, since the arrays of the
        message being encoded may still be in it). The router cannot release an arena while it
        is being written, however fast its first messages are done with (one arena per message
        left 300 KB sim_telarray events, five a message, using 1.5 MB of each 4 MB arena)."""
        unpins, self._sealed_pinned = self._sealed_pinned, []
        if self._arena is None or self._arena_pinned or not self._arena_pos:
            return [], unpins
        self._arena_pinned = True
        return [self._arena[0]], unpins

    def put_parts(self, parts: list, nbytes: int) -> str:
        """The name of a segment holding the concatenation of ``parts`` (``nbytes`` in all):
        a batch's blob, written without joining it first."""
        name, mm = self._segment(nbytes)
        view = memoryview(mm)
        pos = 0
        for p in parts:
            n = len(p)
            view[pos:pos + n] = p
            pos += n
        view.release()
        if not is_pooled(name):
            mm.close()
        return name

    def _segment(self, nbytes: int) -> tuple[str, mmap.mmap]:
        """A writable segment of at least ``nbytes``: recycled from the pool, new and pooled while
        the pool has room, else new and unpooled."""
        cap = capacity(nbytes)
        name, mm = self._reclaim(cap)
        if mm is not None:
            return name, mm
        if self._pooled + cap <= self.pool_bytes:
            name, mm = self._create(f"{self._own}p{next(self._ids)}", cap)
            self._pool.setdefault(cap, collections.deque()).append((name, mm))
            self._pooled += cap
            return name, mm
        return self._create(f"{self._own}{next(self._ids)}", nbytes)

    def _create(self, name: str, size: int) -> tuple[str, mmap.mmap]:
        """A new segment; OSError (ENOSPC) when /dev/shm is full, not a SIGBUS on first write
        (a container's /dev/shm is often only 64 MB): the caller then sends plain frames."""
        path = self._path(name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            if size:
                os.posix_fallocate(fd, 0, size)
            return name, mmap.mmap(fd, size)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)

    def _reclaim(self, cap: int) -> tuple[str, mmap.mmap | None]:
        """A pooled segment of capacity ``cap`` the router has released, taken back (or None)."""
        pool = self._pool.get(cap)
        for _ in range(min(POOL_TRIES, len(pool) if pool else 0)):
            name, mm = pool[0]
            path = self._path(name)
            try:
                os.rename(path + FREE, path)
            except FileNotFoundError:
                if os.path.exists(path):      # still in use: try the next one
                    pool.rotate(-1)
                    continue
                pool.popleft()                # removed (end of run): forget it
                self._pooled -= cap
                mm.close()
                continue
            pool.rotate(-1)
            self.reused += 1
            return name, mm
        return "", None

    def release(self, name: str, unlink: bool = False) -> None:
        """The router's side: nothing references segment ``name`` any more. A pooled segment goes
        back to its creator (renamed ``~free``), any other (or with ``unlink``) is unlinked."""
        if is_pooled(name) and not unlink:
            path = self._path(name)
            try:
                os.rename(path, path + FREE)
            except FileNotFoundError:
                pass
        else:
            self.unlink(name)

    def release_pool_of(self, pid: int) -> None:
        """Unlink the released pooled segments of a process that is gone (none will take them)."""
        head = f"{self.prefix}{pid}-"
        try:
            names = os.listdir(SHM_DIR)
        except OSError:
            return
        for name in names:
            if name.startswith(head) and name.endswith(FREE) and is_pooled(name[:-len(FREE)]):
                self.unlink(name)

    # -- pins: what this process still maps ----------------------------------------------------
    def take_touched(self) -> list[str]:
        """Names of the segments attached since the last call."""
        with self._lock:
            touched, self._touched = self._touched, []
        return touched

    def retained(self, names) -> list[str]:
        """Of ``names``, those still mapped here and not yet reported: to pin at the router."""
        with self._lock:
            new = [n for n in set(names) if n in self._live and n not in self._pinned]
            self._pinned.update(new)
        return new

    def take_released(self) -> list[str]:
        """Pinned names whose last mapping here is gone since the last call: to unpin."""
        out = []
        while self._released:
            out.append(self._released.popleft())
        return out

    def _unmapped(self, key: int, name: str) -> None:
        self._maps.pop(key, None)
        if not self.pins:
            return
        with self._lock:
            n = self._live.get(name, 0) - 1
            if n > 0:
                self._live[name] = n
                return
            self._live.pop(name, None)
            if name in self._pinned:
                self._pinned.discard(name)
                self._released.append(name)

    def attach(self, name: str) -> memoryview:
        """A read-only view of segment ``name``; the attach ends when the view and every array
        made from it are gone (what `retained` and `take_released` report).

        Pooled segments come back again and again (their creator recycles them), so their
        mappings are kept (up to `MAP_CACHE` of them, `MAP_CACHE_BYTES` in all) and re-used: a
        name is never given to another file (see ``_own``), and a pooled segment keeps its size.
        A new mapping costs open, fstat, mmap, a page fault per 4 KB page at first touch (~0.2 ms
        for a 2 MB batch) and later a munmap, which flushes the TLB of every CPU the process ran
        on: for 150 KB events that was a quarter of a stager's CPU."""
        path = self._path(name)
        hit = self._mapped.get(name)
        if hit is not None:
            mm, size = hit
            self._mapped.move_to_end(name)
        else:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ProtocolError(f"shared-memory segment {name!r} does not exist") from None
            try:
                size = os.fstat(fd).st_size
                if not size:
                    return memoryview(b"")
                mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            if is_pooled(name):
                self._mapped[name] = (mm, size)
                self._mapped_bytes += size
                while len(self._mapped) > MAP_CACHE or self._mapped_bytes > MAP_CACHE_BYTES:
                    self._mapped_bytes -= self._mapped.popitem(last=False)[1][1]
                    # (unmapped once its last view is gone)
        view = np.frombuffer(mm, np.uint8)   # this attach's own object: its end is observable
        self._maps[id(view)] = (name, view.__array_interface__["data"][0], size)
        if self.pins:
            with self._lock:
                self._live[name] = self._live.get(name, 0) + 1
                self._touched.append(name)
        weakref.finalize(view, self._unmapped, id(view), name)
        return memoryview(view)

    def forget_unlinked(self) -> int:
        """Drop the kept mappings of segments whose file is gone (their creator exited and the
        router removed them), so that their memory goes back to the system once their last view
        is gone; returns how many. One directory listing: workers call it about once a second.
        (A segment being renamed may be missed by the listing: dropping a mapping is always safe,
        the next attach maps it again.)"""
        if not self._mapped:
            return 0
        try:
            present = set(os.listdir(SHM_DIR))
        except OSError:
            return 0
        gone = [n for n in self._mapped if n not in present and n + FREE not in present]
        for name in gone:
            self._mapped_bytes -= self._mapped.pop(name)[1]
        return len(gone)

    def lookup(self, arr: np.ndarray) -> tuple[str, int] | None:
        """(name, offset) when ``arr`` is a contiguous view into a segment this process mapped."""
        base, entry = arr, None
        for _ in range(16):    # arrays -> their bases, memoryviews -> their exporters
            if isinstance(base, np.ndarray):
                entry = self._maps.get(id(base))
                if entry is not None:
                    break
                base = base.base
            elif isinstance(base, memoryview):
                base = base.obj
            else:
                break
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
