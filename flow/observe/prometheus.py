"""Optional Prometheus exporter of the monitor's stats records (``pip install prometheus-client``).

`MetricsExporter(port).update(stats_record)` serves the latest record on ``http://ADDR:PORT/metrics``:
per-step gauges (rate, queue, workers and bounds, busy, latency, bottleneck) and counters (events in
and out, errors, retries, dead letters; cumulative per run, as the router counts them), plus run-level
values. The values are read from the latest record at scrape time by a custom collector, so counters
are exactly the router's and a new run simply starts them again (Prometheus treats that as a reset).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from flow.errors import FlowError

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
except ImportError:  # pragma: no cover - optional dependency
    CollectorRegistry = None

STEP_GAUGES = (("rate", "flow_step_rate", "events per second in the last interval"),
               ("rate_avg", "flow_step_rate_avg", "events per second over the run"),
               ("queue", "flow_step_queue", "events queued for the step"),
               ("queue_bytes", "flow_step_queue_bytes", "bytes queued for the step"),
               ("inflight", "flow_step_inflight", "events leased to workers"),
               ("workers", "flow_step_workers", "worker processes"),
               ("workers_min", "flow_step_workers_min", "lower worker bound"),
               ("workers_max", "flow_step_workers_max", "upper worker bound"),
               ("busy", "flow_step_busy", "busy fraction of the workers"),
               ("latency_p50_ms", "flow_step_latency_p50_ms", "median processing latency"),
               ("latency_p99_ms", "flow_step_latency_p99_ms", "99th percentile latency"),
               ("bottleneck", "flow_step_bottleneck", "1 for the step limiting throughput"))
STEP_COUNTERS = (("in", "flow_step_events_in", "events received by the step"),
                 ("out", "flow_step_events_out", "events emitted by the step"),
                 ("errors", "flow_step_errors", "failed attempts"),
                 ("retries", "flow_step_retries", "retried events"),
                 ("dead_letter", "flow_step_dead_letters", "events sent to the dead-letter file"))
RUN_GAUGES = (("elapsed_s", "flow_run_elapsed_seconds", "seconds since the run started"),
              ("progress", "flow_run_progress", "fraction of the known total produced"),
              ("eta_s", "flow_run_eta_seconds", "estimated seconds to the end"))


class _StatsCollector:
    def __init__(self) -> None:
        self.record: dict | None = None
        self.lock = threading.Lock()

    def collect(self) -> Iterator:
        with self.lock:
            rec = self.record
        if rec is None:
            return
        steps = rec.get("steps") or {}
        for key, name, doc in STEP_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["step"])
            for step, s in steps.items():
                if s.get(key) is not None:
                    g.add_metric([step], float(s[key]))
            yield g
        for key, name, doc in STEP_COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["step"])
            for step, s in steps.items():
                c.add_metric([step], float(s.get(key) or 0))
            yield c
        group = GaugeMetricFamily("flow_step_fused", "1 for a step running fused in the chain "
                                  "named by 'group' (its first step)", labels=["step", "group"])
        for step, s in steps.items():
            if s.get("group"):
                group.add_metric([step, str(s["group"])], 1.0)
        yield group
        produced = CounterMetricFamily("flow_run_produced", "events produced in this run")
        produced.add_metric([], float(rec.get("produced") or 0))
        yield produced
        for key, name, doc in RUN_GAUGES:
            if rec.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(rec[key]))
        info = InfoMetricFamily("flow_run", "the run being monitored")
        info.add_metric([], {"run_id": str(rec.get("run_id")), "state": str(rec.get("state"))})
        yield info


class MetricsExporter:
    """Serve the latest stats record to Prometheus on ``addr:port`` (``port=0``: any free port)."""

    def __init__(self, port: int = 9464, addr: str = "127.0.0.1"):
        if CollectorRegistry is None:
            raise FlowError("the Prometheus exporter needs prometheus-client (pip install "
                            "'flow-iact[metrics]')")
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _StatsCollector()
        self.registry.register(self._collector)
        try:
            self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise FlowError(f"cannot serve metrics on {addr}:{port}: {exc.strerror}") from exc
        self.port = self._server.server_port
        self.addr = addr

    def update(self, stats_record: dict) -> None:
        """Publish ``stats_record`` (a stats record of docs/monitoring.md); others are ignored."""
        if stats_record.get("type", "stats") != "stats":
            return
        with self._collector.lock:
            self._collector.record = stats_record

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MetricsExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
