"""Carries out the auto-scaling policy (`flow.engine.scale_policy.decide`) on a running router.

Once a tick, it measures each scaled stager over the last window (arrivals, service time per event,
queue and its trend, busy fraction), asks the policy for worker counts within the CPU budget, and
starts or retires workers. Every decision is logged with its reason and returned for the statistics.
"""

from __future__ import annotations

import logging
import os
import time

from flow.engine.scale_policy import ScalerConfig, ScalerState, StepStats, decide

log = logging.getLogger("flow.scaler")


class AutoScaler:
    """Tick callback: ``scaler(router) -> [decision dicts]``."""

    def __init__(self, graph, router, config: ScalerConfig | None = None, clock=time.monotonic):
        budget = graph.router.cpu_budget or os.cpu_count() or 1
        budget += getattr(router.launcher, "remote_cpus", lambda: 0)()  # agents present now
        self.config = config or ScalerConfig(cpu_budget=budget)
        self.state = ScalerState()
        self.clock = clock
        self.last: dict[str, tuple[float, int, int, float, int]] = {}
        self.service: dict[str, float] = {}
        self.router = router

    def measure(self, router, now: float) -> dict[str, StepStats]:
        stats = {}
        for name, st in router.steps.items():
            if st.kind != "stager" or st.finished:
                continue
            workers = sum(1 for w in st.workers.values() if w.state in ("starting", "ready"))
            queue = st.queue_events
            if st.unit is not None:   # a fused step: its chain (the first step) is scaled
                continue
            busy_s = st.unit_busy_s if st.members else st.busy_s   # a chain: all its steps
            t0, in0, done0, busy0, q0 = self.last.get(name, (now, st.n_in, st.n_done, busy_s,
                                                             queue))
            self.last[name] = (now, st.n_in, st.n_done, busy_s, queue)
            dt = now - t0
            if dt <= 0:
                continue
            done = st.n_done - done0
            busy = busy_s - busy0
            if done > 0:
                sample = busy / done
                prev = self.service.get(name)
                self.service[name] = sample if prev is None else 0.5 * prev + 0.5 * sample
            ready = max(1, sum(1 for w in st.workers.values() if w.state == "ready"))
            stats[name] = StepStats(
                name=name, arrivals_per_s=(st.n_in - in0) / dt,
                service_s=self.service.get(name, 0.0), queue=queue,
                queue_trend=(queue - q0) / dt, busy=min(1.0, busy / (dt * ready)),
                workers=workers, min_workers=st.min_workers, max_workers=st.max_workers,
                done_per_s=done / dt)
        return stats

    def __call__(self, router) -> list[dict]:
        now = self.clock()
        stats = self.measure(router, now)
        if not stats:
            return []
        desired, decisions, self.state = decide(stats, self.config, self.state, now)
        out = []
        for d in decisions:
            log.info("scaler: %s %d -> %d: %s", d.step, d.old, d.new, d.reason)
            router.set_workers(d.step, d.new)
            out.append({"t": time.time(), "step": d.step, "old": d.old, "new": d.new,
                        "reason": d.reason})
        return out
