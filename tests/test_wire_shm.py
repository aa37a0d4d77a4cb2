"""flow.wire.shm: large arrays through shared memory, their lifetime tied to the router's leases."""

from __future__ import annotations

import gc
import json
import os
from dataclasses import replace

import numpy as np
import pytest

from flow.engine.replay import replay_graph
from flow.engine.run import RunOptions, run
from flow.errors import ProtocolError
from flow.observe.summary import EXIT_OK, EXIT_PARTIAL
from flow.wire import codec
from flow.wire.shm import FREE, SHM_DIR, ShmStore, available, capacity, creator_pid, is_pooled
from tests.test_engine_e2e import load
from tests.test_engine_faults import run_watching

pytestmark = pytest.mark.skipif(not available(), reason="no writable /dev/shm on this system")


def segments(prefix: str = "flow-") -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]


@pytest.fixture
def store():
    st = ShmStore(f"flow-test-{os.getpid()}-", 1 << 16)
    codec.configure_shm(st)
    yield st
    codec.configure_shm(None)
    st.cleanup()


def test_round_trip_and_pass_through_without_copy(store):
    a = np.arange(1 << 18, dtype=np.float64).reshape(512, 512)
    refs: list = []
    frames = codec.encode({"a": a, "small": np.arange(3)}, refs=refs)
    assert len(frames) == 1 and len(refs) == 1 and refs[0].endswith(f":{a.nbytes}")
    back = codec.decode(frames)
    assert np.array_equal(back["a"], a) and not back["a"].flags.writeable
    refs2: list = []
    codec.encode({"rows": back["a"][100:], "all": back["a"]}, refs=refs2)
    name = refs[0].rpartition(":")[0]
    assert [r.rpartition(":")[0] for r in refs2] == [name, name]  # same segment: no new copy
    assert len(segments(store.prefix)) == 1
    assert store.cleanup() == 1 and not segments(store.prefix)


def test_names_outside_the_run_are_refused(store):
    other = ShmStore("flow-other-", 1 << 16)
    with pytest.raises(ProtocolError, match="not of this run"):
        store.attach("flow-other-1-0")
    with pytest.raises(ProtocolError, match="not of this run"):
        store.attach(f"{store.prefix}../../etc/passwd")
    with pytest.raises(ProtocolError, match="does not exist"):
        store.attach(f"{store.prefix}999-999")
    assert other.prefix != store.prefix


def test_decoding_shared_memory_without_a_store_is_rejected(store):
    frames = codec.encode({"a": np.zeros(1 << 17)}, refs=[])
    codec.configure_shm(None)
    with pytest.raises(ProtocolError, match="shared-memory payload"):
        codec.decode(frames)


BIG = """
name: shm
steps:
  - {name: read, use: "tests.engine_steps:Blobs", with: {n: 60, nbytes: 4194304}, to: [work]}
  - {name: work, use: "tests.steps:AddOne", workers: 2, to: [write]}
  - {name: write, use: "tests.engine_steps:BlobSums", with: {path: OUT/sums.txt}}
router: {dead_letter: OUT/dl.jsonl, shm_threshold: 1048576}
"""


def test_big_events_travel_through_shared_memory_and_leave_nothing(tmp_path):
    seen = []

    def watch(router):
        watch.prefix = router.shm_store.prefix
        seen.append(len(segments(watch.prefix)))

    summary = run_watching(load(tmp_path, BIG), tmp_path, 0.01, watch)
    assert summary.exit_code == EXIT_OK
    expected = float(np.arange(4194304 // 4, dtype=np.float32).sum(dtype=np.float64))
    rows = [line.split() for line in (tmp_path / "sums.txt").read_text().splitlines()]
    assert sorted(int(k) for k, _, _ in rows) == list(range(60))
    assert all(float(s) == expected and w == "0" for _, s, w in rows)
    assert max(seen) > 0, "segments existed during the run"
    assert not segments(watch.prefix), "every segment was unlinked"


def test_dead_letters_keep_shared_memory_payloads_and_replay_them(tmp_path):
    graph = load(tmp_path, """
        name: shm-dl
        steps:
          - {name: read, use: "tests.engine_steps:Blobs", with: {n: 10, nbytes: 2097152},
             to: [check]}
          - {name: check, use: "tests.engine_steps:FailOnBig", with: {fail_on: [4]}, to: [write]}
          - {name: write, use: "tests.engine_steps:BlobSums", with: {path: OUT/sums.txt}}
        router: {dead_letter: OUT/dl.jsonl, shm_threshold: 1048576, max_retries: 2}
        """)
    summary = run(graph, RunOptions(quiet=True, run_dir=str(tmp_path / "r")))
    assert summary.exit_code == EXIT_PARTIAL
    record = json.loads((tmp_path / "dl.jsonl").read_text())
    assert record["key"] == "4" and record.get("shm")
    fixed = replace(graph, steps=tuple(
        replace(s, params=(("fail_on", []),)) if s.name == "check" else s for s in graph.steps))
    again = run(replay_graph(fixed, str(tmp_path / "dl.jsonl")),
                RunOptions(quiet=True, run_dir=str(tmp_path / "r2"), resume=True))
    assert again.exit_code == EXIT_OK
    rows = [line.split() for line in (tmp_path / "sums.txt").read_text().splitlines()]
    expected = float(np.arange(2097152 // 4, dtype=np.float32).sum(dtype=np.float64))
    assert sorted(int(k) for k, _, _ in rows) == list(range(10))
    assert all(float(s) == expected for _, s, _ in rows)


def test_capacity_rounds_up_by_at_most_an_eighth():
    for n in (1, 65536, 65537, 1 << 20, (1 << 20) + 1, 3_000_000, 4 << 20, 7 << 20):
        c = capacity(n)
        assert c >= n and (c <= n * 1.125 or c == 1 << 16)
    assert capacity(4_000_000) == capacity(4_100_000)     # similar sizes share segments


def test_pooled_segment_is_reused_only_once_released(store):
    producer = ShmStore(store.prefix, 1 << 16, pool_bytes=8 << 20)
    a, b = np.full(1 << 18, 1.0), np.full(1 << 18, 2.0)
    first, _ = producer.put(a)
    producer.seal()                                # each array in its own message
    second, _ = producer.put(b)                    # `first` is still in use: a new segment
    producer.seal()
    assert is_pooled(first) and second != first
    store.release(first)                           # the router: nobody references it any more
    assert os.path.exists(os.path.join(SHM_DIR, first + FREE))
    third, _ = producer.put(np.full(1 << 18, 3.0))
    assert third == first and producer.reused == 1
    assert np.all(np.frombuffer(store.attach(third), np.float64)[: 1 << 18] == 3.0)
    assert np.all(np.frombuffer(store.attach(second), np.float64)[: 1 << 18] == 2.0)


def test_segments_of_a_process_that_is_gone_are_unlinked_not_recycled(store):
    producer = ShmStore(store.prefix, 1 << 16, pool_bytes=8 << 20)
    name, _ = producer.put(np.ones(1 << 18))
    assert creator_pid(name, store.prefix) == os.getpid()
    store.release(name, unlink=True)               # what the router does once its creator left
    assert not segments(store.prefix)


def test_unpooled_segments_are_unlinked_on_release(store):
    producer = ShmStore(store.prefix, 1 << 16, pool_bytes=0)
    name, _ = producer.put(np.ones(1 << 18))
    assert not is_pooled(name)
    store.release(name)
    assert not segments(store.prefix)


def test_a_worker_pins_what_it_keeps_and_unpins_what_it_lets_go(store):
    store.pins = True                              # a worker's store tracks what it maps
    producer = ShmStore(store.prefix, 1 << 16, pool_bytes=8 << 20)
    frames = [codec.encode({"a": np.full(1 << 18, float(i))}, refs=[]) for i in range(2)]
    # (the producer side of the codec is this process's `store`: use the pool directly)
    names = []
    for i in range(2):                             # two messages: two arenas
        names.append(producer.put(np.full(1 << 18, float(i)))[0])
        producer.seal()
    kept = np.frombuffer(store.attach(names[0]), np.float64)
    dropped = np.frombuffer(store.attach(names[1]), np.float64)
    touched = store.take_touched()
    assert sorted(touched) == sorted(names)
    assert sorted(store.retained(touched)) == sorted(names)
    assert store.retained(touched) == []           # reported once
    del dropped
    assert store.take_released() == [names[1]]
    assert kept[0] == 0.0 and store.take_released() == []
    del kept, frames
    assert store.take_released() == [names[0]]
    router = ShmStore(store.prefix, 1 << 16)       # the router's does not (it never reports)
    view = router.attach(names[0])
    assert router.take_touched() == [] and router.retained(names) == []
    del view


KEEP = """
name: shm-keep
steps:
  - {name: read, use: "tests.engine_steps:Filled", with: {n: 80, nbytes: 2097152}, to: [pass]}
  - {name: pass, use: "tests.steps:Sleep", with: {ms: 1}, to: [keep]}
  - {name: keep, use: "tests.engine_steps:Keeper", with: {keep: 8, hold: 5, path: OUT/keep.json}}
router: {dead_letter: OUT/dl.jsonl, shm_threshold: 1048576, queue_limit_bytes: 67108864}
"""


def test_recycled_segments_never_change_under_an_array_a_step_keeps(tmp_path):
    """The producer recycles its segments (80 events through fewer segments), yet the
    arrays the consumer keeps (8 to the end, the others for 5 events) never see another event's
    values: the consumer pins what it holds, and the router recycles only what nobody maps."""
    summary = run(load(tmp_path, KEEP), RunOptions(quiet=True, run_dir=str(tmp_path / "r")))
    assert summary.exit_code == EXIT_OK
    report = json.loads((tmp_path / "keep.json").read_text())
    assert sorted(report["keys"], key=int) == [str(i) for i in range(80)]
    assert report["bad"] == []
    assert report["segments"] < 80, report     # recycled: not one new segment per event


def test_kill_9_with_batches_in_shared_memory_loses_nothing_and_leaks_nothing(tmp_path):
    """Batches travel as shared-memory blobs (threshold 256 bytes): workers killed every 0.2 s
    hold leases whose blobs the router must requeue, split and finally release."""
    import random

    from tests.test_engine_faults import counts, kill_random_worker

    graph = load(tmp_path, """
        name: kill-shm
        steps:
          - {name: read, use: "tests.steps:Counter", with: {n: 3000}, to: [work]}
          - {name: work, use: "tests.steps:Sleep", with: {ms: 0.3}, workers: 2, to: [add]}
          - {name: add, use: "tests.steps:AddOne", workers: 2, to: [write]}
          - {name: write, use: "tests.steps:ListConsumer", with: {path: OUT/out.jsonl}}
        router: {dead_letter: OUT/dl.jsonl, max_retries: 50, heartbeat_s: 0.5,
                 shm_threshold: 256}
        """)
    rng = random.Random(2)
    killed, seen = [], []

    def kill_one(router):
        kill_one.prefix = router.shm_store.prefix
        seen.append(len(segments(kill_one.prefix)))
        kill_random_worker(router, rng, ("work", "add"), killed)

    summary = run_watching(graph, tmp_path, 0.2, kill_one)
    assert len(killed) >= 3, "the test must actually kill workers"
    c = counts(tmp_path / "out.jsonl")
    assert set(c) == {str(i) for i in range(3000)} and max(c.values()) == 1
    assert summary.exit_code == EXIT_OK
    assert max(seen) > 0, "batches went through shared memory"
    assert not segments(kill_one.prefix), "every segment was removed"


def test_full_dev_shm_falls_back_to_plain_frames(store, monkeypatch):
    """A container's /dev/shm is often 64 MB: a segment that cannot be allocated is an error
    caught at creation (not a SIGBUS on first write), and the array travels as a frame."""
    import errno

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    a = np.arange(1 << 16, dtype=np.float64)
    refs: list = []
    frames = codec.encode({"a": a}, refs=refs)
    assert refs == [] and len(frames) == 2
    assert np.array_equal(codec.decode(frames)["a"], a)
    assert not segments(store.prefix), "the failed segment was removed"


def test_attach_reuses_the_mapping_of_a_recycled_segment_and_tracks_each_attach(tmp_path):
    prefix = f"flow-test-{os.getpid()}-map-"
    creator = ShmStore(prefix, 1, pool_bytes=1 << 22)
    reader = ShmStore(prefix, 1, pins=True)
    try:
        name = creator.put_parts([b"a" * 70_000], 70_000)
        v1 = reader.attach(name)
        arr = np.frombuffer(v1[:8], np.uint8)
        assert reader.lookup(np.frombuffer(v1[100:200], np.uint8)) == (name, 100)
        del v1
        assert reader.retained([name]) == [name]          # arr still holds the first attach
        creator.release(name)                             # what the router does ...
        again = creator.put_parts([b"b" * 70_000], 70_000)  # ... and the creator recycles it
        assert again == name and creator.reused == 1
        v2 = reader.attach(name)
        assert bytes(v2[:3]) == b"bbb" and len(reader._mapped) == 1   # same mapping, new data
        del v2
        assert reader.take_released() == []
        del arr                                           # the last view of the first attach
        gc.collect()
        assert reader.take_released() == [name]
    finally:
        creator.cleanup()


def test_the_arrays_of_one_message_share_an_arena_until_it_is_sealed(store):
    from flow.wire.shm import ARENA_BYTES
    producer = ShmStore(store.prefix, 1 << 10, pool_bytes=64 << 20)
    arrays = [np.full(150_000 // 8, float(i)) for i in range(40)]   # 150 KB each
    placed = [producer.put(a) for a in arrays]
    names = [name for name, _ in placed]
    per_arena = ARENA_BYTES // (150_000 + 64)
    assert len(set(names)) == -(-40 // per_arena)          # 27 arrays fill a 4 MB arena
    assert all(off % 64 == 0 for _, off in placed)
    producer.seal()
    assert producer.put(np.ones(10))[0] not in names       # after seal: another arena
    producer.seal()
    for (name, off), a in zip(placed, arrays, strict=True):   # nothing overwrote anything
        view = np.frombuffer(store.attach(name), np.uint8)[off:off + a.nbytes]
        assert np.array_equal(view.view(np.float64), a)
    big = np.ones((ARENA_BYTES // 2 + 8) // 8)                 # above half an arena: its own
    name, off = producer.put(big)
    assert off == 0 and name not in names


def test_an_arena_filled_across_messages_is_not_released_while_it_is_written(store):
    """The first message's events are done before the next message's arrays go into the same
    arena: the producer's pin keeps the router from recycling it under them, and its unpin, with
    the message after the arena is full, lets the router release it."""
    from flow.wire.ledger import SegmentLedger
    from flow.wire.shm import ARENA_BYTES
    producer = ShmStore(store.prefix, 1 << 10, pool_bytes=64 << 20)
    ledger = SegmentLedger(store)                          # the router's account

    def send(arrays):   # encode a message, then the router queues it and applies its pins
        names = [producer.put(a)[0] for a in arrays]
        pins, unpins = producer.arena_pins()
        ledger.hold([f"{n}:1" for n in names], +1)
        ledger.pin(b"producer", {"pins": pins, "unpins": unpins})
        return names, pins, unpins

    first, pins, unpins = send([np.full(1000, 1.0)])
    assert pins == first and unpins == []
    ledger.hold([f"{first[0]}:1"], -1)                     # its lease is done: the arena stays
    assert os.path.exists(os.path.join(SHM_DIR, first[0]))
    second, pins, unpins = send([np.full(1000, 2.0)])
    assert second == first and pins == [] and unpins == []   # the same arena, pinned once
    half = np.full(ARENA_BYTES // 2 // 8, 3.0)
    third, pins, unpins = send([half, half])               # the second half does not fit
    arena = first[0]
    assert third[0] == arena and third[1] != arena
    assert pins == [third[1]] and unpins == [arena]        # sealed: unpinned with this message
    assert os.path.exists(os.path.join(SHM_DIR, arena))     # ... still referenced by two batches
    view = np.frombuffer(store.attach(arena), np.float64)
    second_at = (8000 + -8000 % 64) // 8                  # 64-byte aligned after the first
    assert view[0] == 1.0 and view[second_at] == 2.0 and view[second_at - 1] == 1.0
    del view
    ledger.hold([f"{arena}:1"], -1)                        # the second message's lease
    ledger.hold([f"{arena}:1", f"{third[1]}:1"], -1)       # the third's
    assert os.path.exists(os.path.join(SHM_DIR, arena + FREE))   # released to its creator
    assert os.path.exists(os.path.join(SHM_DIR, third[1]))       # the open arena: pinned


def test_kept_mappings_of_removed_segments_are_forgotten(store):
    producer = ShmStore(store.prefix, 1 << 10, pool_bytes=16 << 20)
    names = []
    for i in range(3):
        names.append(producer.put(np.full(1000, float(i)))[0])
        producer.seal()
    views = [store.attach(n) for n in names]
    del views
    assert len(store._mapped) == 3 and store.forget_unlinked() == 0
    store.release(names[0])                     # released (renamed ~free): still there
    store.release(names[1], unlink=True)        # its creator is gone: removed
    assert store.forget_unlinked() == 1 and set(store._mapped) == {names[0], names[2]}
    assert np.frombuffer(store.attach(names[2]), np.float64)[0] == 2.0


def test_arena_room_says_whether_the_next_event_fits(store):
    from flow.wire.shm import ARENA_BYTES
    producer = ShmStore(store.prefix, 1 << 10, pool_bytes=64 << 20)
    assert producer.arena_room() == -1                     # no arena yet
    event = np.ones(1_100_000 // 8)                        # 1.1 MB, as an SST-1M event
    for k in range(1, 4):
        before = producer.arena_bytes
        producer.put(event)
        used = producer.arena_bytes - before
        assert used == event.nbytes + (-event.nbytes % 64)
        assert producer.arena_room() == ARENA_BYTES - k * used
    assert producer.arena_room() < used                    # a fourth would spill: end the message
    producer.seal()
    assert producer.arena_room() == -1


def test_a_segment_released_out_of_order_is_taken_back(store):
    """Two workers finish their leases out of order: the creator finds the free segment behind
    the busy ones instead of making (and page-faulting) another."""
    producer = ShmStore(store.prefix, 1 << 16, pool_bytes=64 << 20)
    names = []
    for i in range(6):
        names.append(producer.put(np.full(1 << 18, float(i)))[0])
        producer.seal()
    store.release(names[4])                                # only the fifth is done
    again, _ = producer.put(np.full(1 << 18, 9.0))
    assert again == names[4] and producer.reused == 1
