"""flow.engine.router.leasing: lease sizes follow what a step's events cost (``lease_s``)."""

from __future__ import annotations

import collections

from flow.engine.router.leasing import FIRST_LEASE, CreditAndLeasing
from flow.engine.router.state import StepState
from flow.graph.model import RouterOptions, StepSpec
from tests.steps import read_jsonl
from tests.test_engine_e2e import load
from tests.test_engine_faults import run_watching


def leasing(**opts) -> CreditAndLeasing:
    c = CreditAndLeasing()
    c.opts, c.steps = RouterOptions(**opts), {}
    return c


def state(n_done: int = 0, busy_s: float = 0.0) -> StepState:
    st = StepState(StepSpec(name="s", kind="stager", use="x:Y"), 1, (), set())
    st.n_done, st.busy_s = n_done, busy_s
    return st


def test_lease_size_is_lease_s_of_work_at_most_batch_max():
    c = leasing(lease_s=0.05, batch_max=256)
    assert c.lease_size(state()) == FIRST_LEASE                       # nothing known yet
    assert c.lease_size(state(100, 0.3)) == 16                        # 3 ms per event
    assert c.lease_size(state(100, 10.0)) == 1                        # 100 ms per event
    assert c.lease_size(state(10_000, 0.05)) == 256                   # 5 us per event
    assert leasing(batch_max=8).lease_size(state()) == 8


def test_a_fused_chain_is_sized_by_its_whole_lease_time():
    c = leasing(lease_s=0.05)
    first, second = state(100, 0.1), state(100, 0.1)
    first.members, second.unit = (first, second), first
    first.unit_busy_s = 0.5                                           # 5 ms per event, all steps
    assert c.lease_size(first) == c.lease_size(second) == 10


def test_a_step_takes_no_larger_leases_than_the_steps_after_it():
    c = leasing(lease_s=0.05)
    fast, slow = state(10_000, 0.05), state(100, 0.5)
    fast.targets, c.steps = ("slow",), {"fast": fast, "slow": slow}
    assert c.lease_size(fast) == c.lease_size(slow) == 10


def lease_sizes(tmp_path, slow: bool) -> dict:
    """Run 3000 events through a fast step (then a slow one) and record every lease's size."""
    then = """
          - {name: slow, use: "tests.steps:Sleep", with: {ms: 5}, workers: 2, fuse: false,
             to: [write]}""" if slow else ""
    graph = load(tmp_path, f"""
        name: lease-sizes
        steps:
          - {{name: read, use: "tests.steps:Counter", with: {{n: 3000}}, to: [fast]}}
          - {{name: fast, use: "tests.steps:AddOne", fuse: false, to: [{'slow' if slow else 'write'}]}}{then}
          - {{name: write, use: "tests.steps:ListConsumer", with: {{path: OUT/out.jsonl}}}}
        router: {{lease_s: 0.05}}
        """)
    sizes: dict = collections.defaultdict(set)

    def watch(router):
        try:
            for w in list(router.workers.values()):
                for batch, _ in list(w.leases.values()):
                    sizes[w.step].add(batch.n)
        except RuntimeError:      # the router changed a dict while we read it: next time
            pass

    summary = run_watching(graph, tmp_path, 0.005, watch)
    assert summary.exit_code == 0 and len(read_jsonl(str(tmp_path / "out.jsonl"))) == 3000
    return sizes


def test_a_fast_step_takes_a_deep_queue_in_large_leases(tmp_path):
    sizes = lease_sizes(tmp_path, slow=False)
    assert max(sizes["fast"]) > 4 * FIRST_LEASE, sizes["fast"]


def test_a_slow_step_and_the_steps_before_it_get_small_leases(tmp_path):
    sizes = lease_sizes(tmp_path, slow=True)
    # 5 ms per event: 0.05 s of work is 10 events (16 before the first ACK told the cost)
    assert sizes["slow"] and max(sizes["slow"]) <= FIRST_LEASE, sizes["slow"]
    assert max(sizes["fast"]) <= FIRST_LEASE, sizes["fast"]
