"""flow.wire.ledger: a segment is released once no batch references it and no worker maps it."""

from __future__ import annotations

import pytest

from flow.errors import ProtocolError
from flow.wire.ledger import SegmentLedger


class FakeStore:
    prefix = "flow-run-"

    def __init__(self):
        self.released: list[tuple[str, bool]] = []
        self.pools_dropped: list[int] = []

    def release(self, name: str, unlink: bool = False) -> None:
        self.released.append((name, unlink))

    def release_pool_of(self, pid: int) -> None:
        self.pools_dropped.append(pid)


A, B = "flow-run-100-p1", "flow-run-100-p2"


@pytest.fixture
def ledger():
    return SegmentLedger(FakeStore())


def test_released_when_the_last_batch_lets_go(ledger):
    ledger.hold([f"{A}:10", f"{B}:20"], +1)
    ledger.hold([f"{A}:10"], +1)                     # fan-out: two batches reference A
    ledger.hold([f"{A}:10", f"{B}:20"], -1)
    assert ledger.store.released == [(B, False)]
    ledger.hold([f"{A}:10"], -1)
    assert ledger.store.released == [(B, False), (A, False)]


def test_a_pinned_segment_waits_for_every_worker_to_let_go(ledger):
    ledger.hold([f"{A}:10"], +1)
    ledger.pin(b"w1", {"pins": [A]})
    ledger.pin(b"w2", {"pins": [A]})
    ledger.hold([f"{A}:10"], -1)
    assert ledger.store.released == []
    ledger.pin(b"w1", {"unpins": [A]})
    assert ledger.store.released == []
    ledger.pin(b"w2", {"unpins": [A]})
    assert ledger.store.released == [(A, False)]


def test_a_worker_that_exits_unpins_and_its_segments_are_unlinked(ledger):
    ledger.hold([f"{A}:10"], +1)
    ledger.pin(b"w1", {"pins": [A, B]})
    ledger.worker_gone(b"w1", 100)                   # w1 (pid 100) created A and B
    assert ledger.store.pools_dropped == [100]
    assert ledger.store.released == [(B, True)]      # nobody references B: unlinked
    ledger.hold([f"{A}:10"], -1)
    assert ledger.store.released == [(B, True), (A, True)]


def test_release_if_unused(ledger):
    ledger.hold([f"{A}:10"], +1)
    ledger.release_if_unused(A)
    ledger.release_if_unused(B)
    assert ledger.store.released == [(B, False)]


@pytest.mark.parametrize("env", [{"pins": "x"}, {"pins": [1]}, {"unpins": ["other-run-1-p1"]}])
def test_malformed_pins_are_a_protocol_error(ledger, env):
    with pytest.raises(ProtocolError, match="malformed shared-memory"):
        ledger.pin(b"w1", env)
