"""flow.engine.router.state: the router's records of batches and steps, and the check of a worker's outputs."""

from __future__ import annotations

import pytest

from flow.engine.router.state import Batch, StepState, outputs_of
from flow.errors import ProtocolError
from flow.graph.model import step
from flow.wire import protocol as P


def items(n: int, target: str = "") -> list:
    return [[str(i), "0", target, [3]] for i in range(n)]


def test_a_batch_splits_into_single_event_batches_with_their_own_payloads():
    its = items(3)
    batch = Batch(P.pack_items(its), 3, [b"aaabbbccc"], 9, attempts=1)
    assert batch.items() == its
    singles = batch.split(batch.frames)
    assert [s.items() for s in singles] == [[it] for it in its]
    assert [bytes(s.frames[0]) for s in singles] == [b"aaa", b"bbb", b"ccc"]
    assert [s.nbytes for s in singles] == [3, 3, 3] and all(s.attempts == 1 for s in singles)
    assert [bytes(f) for f in batch.event_frames(1, batch.frames)] == [b"bbb"]


def test_a_batch_whose_items_do_not_match_its_payload_cannot_be_split():
    batch = Batch(P.pack_items(items(3)), 3, [b"aaabbb"], 6)
    with pytest.raises(ProtocolError):
        batch.split(batch.frames)


def test_step_queue_counts_events_and_bytes():
    spec = (step("a", "tests.steps:Counter") | step("b", "tests.steps:ListConsumer",
                                                   path="x")).graph("g").steps[1]
    st = StepState(spec, 1, (), set())
    first = Batch(P.pack_items(items(2)), 2, [b"xxxxxx"], 6)
    second = Batch(P.pack_items(items(1)), 1, [b"yyy"], 3)
    st.push(first)
    st.push(second, front=True)
    assert (st.queue_events, st.queue_bytes) == (3, 9) and st.queue[0] is second
    assert st.pop() is second and (st.queue_events, st.queue_bytes) == (2, 6)


def test_outputs_of_reads_items_only_when_routed():
    packed = P.pack_items(items(2))
    assert outputs_of({"out": packed, "n": 2}) == (packed, 2, None)
    routed = P.pack_items(items(2, target="b"))
    assert outputs_of({"out": routed, "n": 2, "routed": True})[2] == items(2, target="b")
    assert outputs_of({}) == (b"", 0, None)           # an ACK without outputs


@pytest.mark.parametrize("env", [
    {"out": [["a", "0", "", [1]]], "n": 1},           # v1 list, not packed bytes
    {"out": b"", "n": 1},                              # count without items
    {"out": P.pack_items(items(1)), "n": 0},          # items without count
    {"out": P.pack_items(items(1)), "n": 2},          # wrong count
    {"out": b"\xc1\xc1", "n": 1},                      # garbage
    {"out": P.pack_items(items(1)), "n": 1, "routed": "yes"},
    {"out": P.pack_items([[1, "0", "b", [1]]]), "n": 1, "routed": True},   # bad item shape
])
def test_outputs_of_rejects_malformed_outputs(env):
    with pytest.raises(ProtocolError):
        outputs_of(env)


def fused_graph():
    from flow.graph.model import Graph, RouterOptions
    from flow.graph.model import step as s
    chain = s("read", "tests.steps:Counter") | s("a", "tests.steps:AddOne", workers=(1, 3)) | \
        s("b", "tests.steps:AddOne", workers=2) | s("write", "tests.steps:ListConsumer", path="x")
    g = chain.graph("g")
    return g, Graph("g", g.steps, RouterOptions(fuse=False))


def test_build_steps_gives_a_chain_one_unit_and_keeps_a_state_per_step():
    from flow.engine.router.state import build_steps, unit_of
    fused, unfused = fused_graph()
    steps = build_steps(fused)
    a, b, write = steps["a"], steps["b"], steps["write"]
    assert a.members == (a, b) and b.unit is a and unit_of(b) is a and unit_of(a) is a
    assert (a.group, b.group, write.group, steps["read"].group) == ("a", "a", "", "")
    assert a.targets == ("write",) and write.inputs == {"a"}      # the chain feeds the writer
    assert (a.min_workers, a.max_workers, a.desired) == (2, 3, 2) and b.desired == 0
    plain = build_steps(unfused)
    assert plain["write"].inputs == {"b"} and not plain["a"].members and plain["b"].unit is None


def test_fused_acks_are_checked_before_anything_changes():
    from flow.engine.router.state import build_steps, check_chain_counts, check_chain_failures
    fused, unfused = fused_graph()
    a = build_steps(fused)["a"]
    assert check_chain_counts([[3, 3, 3, 0.1], [3, 2, 2, 0.2]], 2)
    for bad in (None, [[3, 3, 3, 0.1]], [[3, 3, 3, 0.1], [3, -1, 2, 0.2]],
                [[3, 3, 3, 0.1], [3, 2, 2, "x"]]):
        with pytest.raises(ProtocolError):
            check_chain_counts(bad, 2)
    check_chain_failures([[0, "E", "tb", "b"], [1, "E", "tb", "b", "1", "0.1", [b"x"]]], a)
    for bad in ([[0, "E", "tb", "elsewhere"]], [[0, "E", "tb", "b", "1", "0.1", ["x"]]]):
        with pytest.raises(ProtocolError):
            check_chain_failures(bad, a)
    with pytest.raises(ProtocolError):   # an unfused step's ACK cannot name a step
        check_chain_failures([[0, "E", "tb", "b"]], build_steps(unfused)["a"])
