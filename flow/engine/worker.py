"""A worker process: runs one step's code; the only place a step meets a socket (it never sees it).

The worker connects a DEALER to the router's data socket, says HELLO, receives its CONFIG (what to
run, its parameters, the producers' context), runs ``setup`` and then serves the router: a producer
sends PRODUCE batches while it has credit; a stager or consumer answers each DATA lease with one ACK
carrying the outputs. A worker of a fused chain (CONFIG ``chain``) runs every step of the chain on
each event (`flow.engine.fused.FusedChain`) and its ACK adds per-step counters. Heartbeats flow both ways; a worker whose router has gone silent exits.

About 570 lines in one module on purpose: it is one process around one socket, and the producer
loop, the lease loops (one step, or a fused chain) and the connection (send, heartbeats,
shared-memory pins) share that socket's state;
`RecentSet` (the consumer's duplicate filter) and `payload_size` are its only other residents.
"""

from __future__ import annotations

import collections
import os
import signal
import socket as _socket
import sys
import time
import traceback
import warnings

import zmq

from flow.engine import kernels
from flow.engine.fused import FusedChain, Member
from flow.engine.memory import default_numba_cache, tune_gc, tune_malloc
from flow.engine.outputs import ALL, path_after, producer_outputs, stager_outputs
from flow.errors import ProtocolError, StepError
from flow.graph.step import InputWarning, import_object, instantiate
from flow.wire import codec
from flow.wire import protocol as P
from flow.wire.shm import ref_size

CONFIG_TIMEOUT_S = 60.0
# (key, path) pairs a consumer remembers to drop redeliveries. Outputs travel only in ACKs, which
# release their lease atomically, so a live consumer can be sent an event twice only while it is
# in flight (requeued leases): far fewer than this; a consumer that replaces a dead one reads what
# its output holds instead (done_keys). 16 k pairs cost ~4 MB, so a long run's RSS stays flat.
SEEN_MAX = 16_384
BATCH_FLUSH_S = 0.005      # a producer sends a partial batch once its first event is this old
BATCH_BYTES = 4 << 20      # ... or once it holds this many bytes


def payload_size(frames: list) -> int:
    """Bytes of an event's frames, shared-memory references included."""
    n = 0
    for f in frames:
        t = type(f)
        n += len(f) if t is bytes else f.nbytes if t is memoryview else \
            ref_size(f) if t is str else memoryview(f).nbytes
    return n


class RecentSet:
    """A set that forgets its oldest members beyond ``maxlen`` (bounded memory on long runs).

    Redeliveries to the same consumer process come from recent leases; a consumer that replaces a
    dead one reads what its output already holds (``done_keys``) instead.
    """

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self._set: set = set()
        self._order: collections.deque = collections.deque()

    def __contains__(self, item) -> bool:
        return item in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, item) -> None:
        if item in self._set:
            return
        self._set.add(item)
        self._order.append(item)
        if len(self._order) > self.maxlen:
            self._set.discard(self._order.popleft())


def watch_input_warnings(into: list) -> None:
    """Keep the message of every `InputWarning` this process shows (a truncated input file): a
    producer sends them with its EOS, and the router reports them as failures of the step."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            into.append(str(message))
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


class Position:
    """A producer's events, counted as `producer_outputs` numbers them (None is not an event):
    once an event has been taken, ``n`` is its position + 1, where a replacement resumes."""

    def __init__(self, events, start: int = 0):
        self.events = events
        self.n = start

    def __iter__(self):
        for ev in self.events:
            if ev is not None:
                self.n += 1
            yield ev


class Worker:
    """State and loop of one worker process (one step instance)."""

    def __init__(self, endpoint: str, worker_id: str, step_name: str, keys_dir: str | None = None):
        self.worker_id = worker_id
        self.step_name = step_name
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, worker_id.encode())
        self.sock.setsockopt(zmq.LINGER, 2000)
        if keys_dir:
            from flow.wire.security import ClientSecurity
            ClientSecurity(keys_dir).apply_client(self.sock)
        self.sock.connect(endpoint)
        self.step = None
        self.kind = ""
        self.step_index = 0
        self.targets: tuple[str, ...] = ()
        self.heartbeat_s = 1.0
        self.liveness = 5
        self.batch_max = self.batch_max0 = 256
        self.last_sent = 0.0
        self.last_heard = time.monotonic()
        self.done = 0
        self.errors = 0
        self.seen = RecentSet(SEEN_MAX)
        self.done_keys: set[str] = set()
        self._proc = None
        self.use_shm = False
        self.shm = None            # this process's ShmStore when shared memory is on
        self.chain: FusedChain | None = None   # the steps of a fused chain, when it runs one
        self.max_retries = 3
        self._last_stats = 0.0
        self.resume_from = 0       # a producer replacing one that died: events to skip

    # -- sending ---------------------------------------------------------------------------
    def send(self, command: bytes, envelope: dict | None = None, frames: list | None = None) -> None:
        P.Message(command, envelope or {}, frames or []).send(self.sock)
        self.last_sent = time.monotonic()

    def encode(self, event) -> list:
        """An event's frames, followed by its shared-memory references (when enabled)."""
        if not self.use_shm:
            return codec.encode(event)
        refs: list = []
        frames = codec.encode(event, refs=refs)
        return frames + refs if refs else frames

    def send_outputs(self, command: bytes, envelope: dict, out: list, payloads: list) -> None:
        """Send outputs ``[key, path, target]`` with their encoded frames, small ones packed into
        one blob, which goes through shared memory when it is large (the router then moves only
        its name). Shared-memory pins are reported once the payloads are packed."""
        sizes, small, big, refs = P.split_payloads(payloads)
        routed = False
        for entry, sz in zip(out, sizes, strict=False):
            entry.append(sz)
            routed = routed or bool(entry[2])
        envelope["out"] = P.pack_items(out)
        envelope["n"] = len(out)
        if routed:
            envelope["routed"] = True
        nbytes = sum(map(len, small))
        frames = None
        if self.shm is not None and nbytes >= self.shm.threshold:
            try:
                blob = f"{self.shm.put_parts(small, nbytes)}:{nbytes}"
                frames = [b"", *big]
                envelope["blob"] = blob
                refs.append(blob)
            except OSError:   # /dev/shm full: the blob travels in the message
                pass
        if frames is None:
            frames = [b"".join(small), *big]
        small.clear()
        payloads.clear()      # copied into the blob: views of the input may go now
        if self.shm is not None:
            self.pin_report(envelope, command == P.ACK)
        if refs:
            envelope["shm"] = refs
        self.send(command, envelope, frames)

    def maybe_heartbeat(self) -> None:
        self.heartbeat_if_due()
        now = time.monotonic()
        if now - self._last_stats >= 1.0:
            self._last_stats = now
            stats = self.resource_stats()
            if self.shm is not None:
                unpins = self.shm.take_released()
                if unpins:
                    stats["unpins"] = unpins
                self.shm.forget_unlinked()
            self.send(P.STATS, stats)

    def resource_stats(self) -> dict:
        try:
            import psutil
            if self._proc is None:
                self._proc = psutil.Process()
                self._proc.cpu_percent(None)
            cpu = self._proc.cpu_percent(None)
            rss = self._proc.memory_info().rss
        except Exception:  # psutil missing or process info unavailable: report what we know
            cpu, rss = 0.0, 0
        return {"cpu": cpu, "rss": rss, "done": self.done, "errors": self.errors}

    def recv(self, timeout_ms: int) -> P.Message | None:
        """One message from the router, or None on timeout; malformed input is dropped."""
        if not self.sock.poll(timeout_ms):
            return None
        try:
            msg = P.Message.recv(self.sock)
        except ProtocolError as exc:
            print(f"flow worker {self.worker_id}: dropped malformed message: {exc}", file=sys.stderr)
            return None
        self.last_heard = time.monotonic()
        return msg

    def router_lost(self) -> bool:
        return time.monotonic() - self.last_heard > self.heartbeat_s * self.liveness * 2

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> bool:
        self.send(P.HELLO, {"worker": self.worker_id, "step": self.step_name, "pid": os.getpid(),
                            "host": _socket.gethostname()})
        deadline = time.monotonic() + CONFIG_TIMEOUT_S
        while True:
            msg = self.recv(200)
            if msg is not None and msg.command == P.CONFIG:
                break
            if msg is not None and msg.command == P.STOP:
                return False
            if time.monotonic() > deadline:
                print(f"flow worker {self.worker_id}: no CONFIG from the router", file=sys.stderr)
                return False
        env = msg.envelope
        self.kind = env["kind"]
        self.step_index = env["index"]
        self.targets = tuple(env["targets"])
        self.heartbeat_s = env.get("heartbeat_s", 1.0)
        self.liveness = env.get("liveness", 5)
        self.batch_max = self.batch_max0 = env.get("batch_max", 64)
        shm = env.get("shm")
        if shm:
            from flow.wire.shm import ShmStore
            self.shm = ShmStore(shm["prefix"], int(shm["threshold"]),
                                int(shm.get("pool_bytes", 0)), pins=True)
            codec.configure_shm(self.shm)
            self.use_shm = True
        try:
            context = codec.decode(msg.frames) if msg.frames else {}
            if env.get("chain"):    # a fused chain (flow/engine/fused.py): every step, in order
                self.chain = self.make_chain(env["chain"], context)
                self.chain.setup()
                self.step = self.chain
            else:
                obj = import_object(env["use"])
                self.step = instantiate(obj, self.kind, self.step_name, env.get("params", {}),
                                        context)
                self.step.setup()
            # a resumed run, or a consumer replacing one that died: skip what the output holds
            if self.kind == "consumer" and (context.get("flow.resume") or env.get("replacement")):
                self.done_keys = {str(k) for k in self.step.done_keys()}
        except Exception as exc:
            self.send(P.FAILED, {"phase": "setup", "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()})
            return False
        tune_gc()   # after setup: what it built is frozen, never scanned again
        self.resume_from = int(env.get("resume_from") or 0) if self.kind == "producer" else 0
        ready = {"pid": os.getpid()}
        if self.kind == "producer":
            ready["replayable"] = bool(getattr(self.step, "replayable", False))
        self.send(P.READY, ready)
        return True

    def make_chain(self, config: dict, context: dict) -> FusedChain:
        """The steps of a fused chain from its CONFIG (docs/protocol.md)."""
        self.max_retries = int(config.get("max_retries", 3))
        return FusedChain([
            Member(m["step"], instantiate(import_object(m["use"]), "stager", m["step"],
                                          m.get("params", {}), context),
                   int(m["index"]), tuple(m["targets"]))
            for m in config["steps"]])

    def teardown(self) -> dict:
        try:
            self.step.teardown()
            return {"phase": "teardown"}
        except Exception as exc:
            return {"phase": "teardown", "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()}

    # -- producer --------------------------------------------------------------------------
    def run_producer(self) -> None:
        credit = 0
        paused = False
        warned: list[str] = []
        watch_input_warnings(warned)
        shard = self.step.context.get("flow.shard")
        start = self.resume_from      # a replacement: after the last event the router accepted
        events = Position(self.step.resume(start) if start else self.step.process(), start)
        outputs = producer_outputs(events, self.step_name, self.targets, start=start,
                                   shard=tuple(shard) if shard else None)
        path = str(self.step_index)
        while True:
            msg = self.recv(0 if credit > 0 and not paused else int(self.heartbeat_s * 1000))
            if msg is not None:
                if msg.command == P.CREDIT:
                    credit += int(msg.envelope.get("n", 1))
                    if "batch" in msg.envelope:   # events per message: the router's lease size
                        self.batch_max = max(1, min(int(msg.envelope["batch"]), self.batch_max0))
                elif msg.command == P.PAUSE:
                    paused = bool(msg.envelope.get("paused"))
                elif msg.command in (P.STOP, P.EOS):
                    self.send(P.BYE, self.teardown())
                    return
                continue
            if self.router_lost():
                return
            self.maybe_heartbeat()
            if credit <= 0 or paused:
                continue
            out, frames, nbytes = [], [], 0
            finished = False
            t_first = 0.0
            encode, batch_max, clock = self.encode, self.batch_max, time.perf_counter
            shm = self.shm
            try:
                for key, target, event in outputs:
                    arena0 = shm.arena_bytes if shm is not None else 0
                    f = encode(event)
                    out.append([key, path, target])
                    frames.append(f)
                    nbytes += payload_size(f)
                    if len(out) >= batch_max or nbytes >= BATCH_BYTES:
                        break
                    used = shm.arena_bytes - arena0 if shm is not None else 0
                    if used and used > shm.arena_room():
                        break    # the next event like this one would spill into a new arena
                    if not t_first:
                        t_first = clock()
                    elif clock() - t_first >= BATCH_FLUSH_S:
                        break
                else:
                    finished = True
            except Exception as exc:
                self.done += len(out)
                if out:
                    self.send_outputs(P.PRODUCE, {"pos": events.n}, out, frames)
                self.send(P.FAILED, {"phase": "process", "error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc()})
                self.wait_stop()
                return
            self.done += len(out)
            if out:
                self.send_outputs(P.PRODUCE, {"pos": events.n}, out, frames)
                credit -= 1
            if finished:
                self.send(P.EOS, {"warnings": warned} if warned else {})
                self.wait_stop()
                return

    def wait_stop(self) -> None:
        """After EOS/FAILED: keep heartbeating until the router says STOP, then tear down."""
        while not self.router_lost():
            msg = self.recv(int(self.heartbeat_s * 1000))
            if msg is not None and msg.command in (P.STOP, P.EOS):
                self.send(P.BYE, self.teardown())
                return
            self.maybe_heartbeat()

    # -- stager / consumer -----------------------------------------------------------------
    def run_processor(self) -> None:
        while True:
            msg = self.recv(int(self.heartbeat_s * 1000))
            if msg is None:
                if self.router_lost():
                    return
                self.maybe_heartbeat()
                continue
            if msg.command == P.DATA:
                try:
                    self.handle_data(msg)
                except ProtocolError as exc:  # fail the whole lease: the router dead-letters it
                    print(f"flow worker {self.worker_id}: bad DATA: {exc}", file=sys.stderr)
                    n = msg.envelope.get("n")
                    n = n if type(n) is int and 0 <= n <= P.MAX_ITEMS else 0
                    env = {"lease": msg.envelope.get("lease"),
                           "failed": [[i, f"ProtocolError: {exc}", ""] for i in range(n)]}
                    if self.chain is not None:
                        env["steps"] = self.chain.take_counts()
                    self.send_outputs(P.ACK, env, [], [])
            elif msg.command == P.EOS:
                self.send(P.BYE, self.teardown())
                return
            elif msg.command == P.STOP:
                if self.kind == "consumer" or msg.envelope.get("teardown"):
                    self.send(P.BYE, self.teardown())
                return
            self.maybe_heartbeat()

    def handle_data(self, msg: P.Message) -> None:
        items = P.unpack_items(msg.envelope.get("items"), msg.envelope.get("n"))
        payloads = P.unpack_payloads([it[3] for it in items], self.data_frames(msg), refs=False)
        t0 = time.perf_counter()
        if self.kind == "consumer":
            out, out_frames = [], []
            dups, failed = self.consume(items, payloads)
        elif self.chain is not None:
            tap = msg.envelope.get("tap")
            self.chain.tap = tap if type(tap) is str else ""
            attempt = msg.envelope.get("attempt", 0)
            careful = type(attempt) is int and attempt + 1 >= self.max_retries
            out, out_frames, failed = self.transform_fused(items, payloads, careful)
            dups = 0
        else:
            out, out_frames, failed = self.transform(items, payloads)
            dups = 0
        env = {"lease": msg.envelope.get("lease"), "failed": failed,
               "busy_s": time.perf_counter() - t0, "dups": dups}
        if self.chain is not None:
            env["steps"] = self.chain.take_counts()
            if self.chain.sample is not None:   # the tapped edge inside the chain
                env["sample"], self.chain.sample = self.chain.sample, None
        # drop this lease's views before send_outputs reports what the step kept of them (the
        # router must not recycle those segments) and what it has let go since the last report
        payloads = None  # noqa: F841
        self.send_outputs(P.ACK, env, out, out_frames)

    def transform(self, items: list, payloads: list) -> tuple[list, list, list]:
        """A stager's lease: (outputs ``[key, path, target]``, their frames, failures)."""
        out, out_frames, failed = [], [], []
        process, decode, encode = self.step.process, codec.decode, self.encode
        name, targets, index_ = self.step_name, self.targets, self.step_index
        paths: dict[str, str] = {}
        for index, (item, frames) in enumerate(zip(items, payloads, strict=False)):
            key, path = item[0], item[1]
            try:
                result = process(decode(frames))
                new_path = paths.get(path) or paths.setdefault(path, path_after(path, index_))
                if type(result) is dict:       # the common case: one event, to every target
                    out_frames.append(encode(result))
                    out.append([key, new_path, ALL])
                else:
                    routed = stager_outputs(result, key, name, targets)
                    out_frames.extend([encode(ev) for _, _, ev in routed])  # all or none
                    out.extend([k, new_path, target] for k, target, _ in routed)
                self.done += 1
            except Exception as exc:
                self.failed_event(failed, index, exc)
            self.heartbeat_if_due()   # a long lease
        return out, out_frames, failed

    def transform_fused(self, items: list, payloads: list, careful: bool
                        ) -> tuple[list, list, list]:
        """A fused chain's lease: each event runs through every step of the chain here; only
        the last step's outputs are encoded (`flow.engine.fused.FusedChain.run`)."""
        out, out_frames, failed = [], [], []
        run, decode, encode = self.chain.run, codec.decode, self.encode
        for index, (item, frames) in enumerate(zip(items, payloads, strict=False)):
            try:
                routed, failure = run(item[0], item[1], decode(frames), careful)
                encoded = [encode(ev) for _, _, _, ev in routed]      # all or none
            except Exception as exc:   # decoding or encoding: the input is at fault
                self.failed_event(failed, index, exc)
                continue
            out_frames.extend(encoded)
            out.extend([k, p, target] for k, p, target, _ in routed)
            if failure is None:
                self.done += 1
            else:
                self.errors += 1
                failed.append([index, *failure])
            self.heartbeat_if_due()   # a long lease
        return out, out_frames, failed

    def consume(self, items: list, payloads: list) -> tuple[int, list]:
        """A consumer's lease: (duplicates skipped, failures)."""
        failed, dups = [], 0
        step, decode, seen, done_keys = self.step, codec.decode, self.seen, self.done_keys
        for index, (item, frames) in enumerate(zip(items, payloads, strict=False)):
            key = item[0]
            ident = (key, item[1])
            if ident in seen or key in done_keys:
                dups += 1
                continue
            try:
                event = decode(frames)
                step.key = key
                step.process(event)
                seen.add(ident)
                self.done += 1
            except Exception as exc:
                self.failed_event(failed, index, exc)
            self.heartbeat_if_due()   # a long lease
        return dups, failed

    def failed_event(self, failed: list, index: int, exc: Exception) -> None:
        """Record that the step raised on event ``index`` (called in the ``except`` block)."""
        self.errors += 1
        failed.append([index, f"{type(exc).__name__}: {exc}", traceback.format_exc()])

    def heartbeat_if_due(self) -> None:
        if time.monotonic() - self.last_sent >= self.heartbeat_s:
            self.send(P.HEARTBEAT)

    def data_frames(self, msg: P.Message) -> list:
        """A DATA message's frames, its blob mapped from shared memory when it lives there."""
        blob = msg.envelope.get("blob")
        if blob is None:
            return msg.frames
        if self.shm is None or type(blob) is not str or not msg.frames or len(msg.frames[0]):
            raise ProtocolError("unexpected shared-memory blob")
        name, _, n = blob.rpartition(":")
        view = self.shm.attach(name)
        if not n.isdigit() or int(n) > len(view):
            raise ProtocolError("shared-memory blob reference beyond its segment")
        return [view[:int(n)], *msg.frames[1:]]

    def pin_report(self, env: dict, attached: bool = True) -> None:
        """The pins and unpins a message carries: this process's open arena and the ones it
        sealed since (`flow.wire.shm.ShmStore.arena_pins`), and, after a lease (``attached``),
        the segments of its input it kept and those it has let go."""
        pins, unpins = self.shm.arena_pins()
        if attached:
            pins += self.shm.retained(self.shm.take_touched())
            unpins += self.shm.take_released()
        if pins:
            env["pins"] = pins
        if unpins:
            env["unpins"] = unpins


def worker_main(endpoint: str, worker_id: str, step_name: str, keys_dir: str | None = None) -> int:
    """Entry point of a worker process (multiprocessing spawn target, or `flow agent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the router coordinates shutdown
    tune_malloc()
    default_numba_cache()
    worker = Worker(endpoint, worker_id, step_name, keys_dir)
    try:
        if not worker.start():
            return 3
        if worker.kind == "producer":
            worker.run_producer()
        else:
            worker.run_processor()
        kernels.record_used()   # the kernels it ran, for the next run's worker template to preload
        return 0
    except StepError as exc:
        worker.send(P.FAILED, {"phase": exc.phase, "error": str(exc), "traceback": exc.traceback})
        return 3
    finally:
        worker.sock.close(linger=2000)


__all__ = ["Worker", "worker_main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m flow.engine.worker ENDPOINT WORKER_ID STEP [--keys DIR]``"""
    import argparse
    p = argparse.ArgumentParser(prog="python -m flow.engine.worker", description=main.__doc__)
    p.add_argument("endpoint")
    p.add_argument("worker_id")
    p.add_argument("step")
    p.add_argument("--keys", default=None)
    a = p.parse_args(argv)
    return worker_main(a.endpoint, a.worker_id, a.step, a.keys)


if __name__ == "__main__":
    sys.exit(main())
