"""Statistics records built from the router's state (the ``stats`` record of docs/monitoring.md).

Every step has its own record, fused or not; a step that runs fused in a chain (flow/graph/fusion.py)
names the chain's first step in ``group`` (null when it runs on its own) and shows the chain's
workers, while its counters, busy fraction and latencies are its own."""

from __future__ import annotations

import time

import numpy as np

VERSION = 1


class RateMeter:
    """Per-step counters between two ticks, to compute rates over the last interval."""

    def __init__(self):
        self.last: dict[str, tuple[float, int, int, float]] = {}

    def rates(self, name: str, now: float, n_in: int, n_done: int, busy_s: float
              ) -> tuple[float, float, float]:
        """(input rate, completion rate, busy seconds per second) since the previous call."""
        t, i0, d0, b0 = self.last.get(name, (now, n_in, n_done, busy_s))
        self.last[name] = (now, n_in, n_done, busy_s)
        dt = now - t
        if dt <= 0:
            return 0.0, 0.0, 0.0
        return (n_in - i0) / dt, (n_done - d0) / dt, (busy_s - b0) / dt


def step_record(router, st, meter: RateMeter, now: float) -> dict:
    elapsed = max(1e-9, now - router.started_at)
    n_count = st.n_out if st.kind == "producer" else st.n_done
    arrivals, done_rate, busy_rate = meter.rates(st.spec.name, now, st.n_in, n_count, st.busy_s)
    unit = st.unit if getattr(st, "unit", None) is not None else st   # a fused step's chain
    workers = [w for w in unit.workers.values() if w.state not in ("done", "dead")]
    lat = np.fromiter(st.latencies, float) if st.latencies else None
    return {
        "kind": st.kind,
        "in": st.n_in if st.kind != "producer" else st.n_out,
        "out": st.n_out,
        "done": n_count,
        "rate": done_rate,
        "arrivals": arrivals if st.kind != "producer" else done_rate,
        "rate_avg": n_count / elapsed,
        "queue": st.queue_events,
        "queue_bytes": st.queue_bytes,
        "inflight": st.leased(),
        "workers": len(workers),
        "workers_min": unit.min_workers,
        "workers_max": unit.max_workers,
        "busy": min(1.0, busy_rate / max(1, len(workers))) if workers else 0.0,
        "service_s": float(np.mean(lat)) if lat is not None else 0.0,
        "latency_p50_ms": float(np.percentile(lat, 50) * 1e3) if lat is not None else 0.0,
        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3) if lat is not None else 0.0,
        "errors": st.errors,
        "retries": st.retries,
        "restarts": getattr(st, "restarts", 0),
        "dead_letter": st.dead,
        "finished": st.finished,
        "bottleneck": False,
        "group": getattr(st, "group", "") or None,
    }


def stats_record(router, meter: RateMeter, run_id: str, total: int | None = None,
                 decisions: list | None = None, dead_letters: list | None = None,
                 restarts: list | None = None) -> dict:
    """One stats record (docs/monitoring.md) describing the router now: ``decisions`` of the
    scaler, ``restarts`` of the restart policy since the last record, ``failures``, every
    reason the run is failing, and ``warnings``, inputs cut short (the summary's lists)."""
    now = time.monotonic()
    steps = {name: step_record(router, st, meter, now) for name, st in router.steps.items()}
    stagers = [(rec["busy"], name) for name, rec in steps.items()
               if rec["kind"] != "producer" and rec["workers"]]
    if stagers:
        busy, name = max(stagers)
        if busy > 0.5:
            steps[name]["bottleneck"] = True
    elapsed = now - router.started_at
    progress = eta = None
    if total:
        progress = min(1.0, router.produced / total)
        rate = router.produced / max(elapsed, 1e-9)
        eta = (total - router.produced) / rate if rate > 0 else None
    workers = [{"id": w.id.decode(errors="replace"), "step": w.step, "host": w.host, "pid": w.pid,
                "cpu": w.cpu, "rss": w.rss, "done": w.done, "errors": w.errors, "state": w.state}
               for w in router.workers.values() if w.state not in ("done", "dead")]
    return {
        "v": VERSION, "type": "stats", "run_id": run_id, "t": time.time(),
        "state": "paused" if router.paused and router.state == "running" else router.state,
        "elapsed_s": elapsed, "produced": router.produced, "total": total,
        "progress": progress, "eta_s": eta, "rejected": router.rejected,
        "steps": steps, "workers": workers,
        "decisions": decisions or [], "dead_letters": dead_letters or [],
        "restarts": restarts or [],
        "failures": router.failure_reasons() if hasattr(router, "failure_reasons") else [],
        "warnings": list(getattr(router, "input_warnings", [])),
    }
