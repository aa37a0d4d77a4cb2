"""flow.observe.prometheus: the exporter serves the latest stats record on a random local port."""

from __future__ import annotations

import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from flow.observe.prometheus import MetricsExporter  # noqa: E402
from tests.fake_pipeline import FakePipeline  # noqa: E402


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def test_exporter_serves_step_values():
    fake = FakePipeline(interval=None)  # used only to build records; not started
    try:
        rec = None
        for _ in range(4):
            rec = fake.publish_stats()
    finally:
        fake.close()
    with MetricsExporter(0) as exporter:
        assert not any(k.startswith("flow_step") for k in scrape(exporter.port))  # nothing yet
        exporter.update(rec)
        got = scrape(exporter.port)
    clean = rec["steps"]["clean"]
    assert got['flow_step_events_in_total{step="clean"}'] == clean["in"] == 390
    assert got['flow_step_workers{step="calibrate"}'] == rec["steps"]["calibrate"]["workers"] == 2
    assert got['flow_step_workers_max{step="clean"}'] == 4
    assert got['flow_step_queue{step="hillas"}'] == rec["steps"]["hillas"]["queue"]
    assert got['flow_step_bottleneck{step="hillas"}'] == 1.0
    assert got['flow_step_dead_letters_total{step="clean"}'] == 1
    assert got["flow_run_produced_total"] == 400
    assert got[f'flow_run_info{{run_id="{rec["run_id"]}",state="running"}}'] == 1.0


def test_exporter_names_the_chain_of_fused_steps():
    fake = FakePipeline(interval=None)
    try:
        rec = fake.publish_stats()
    finally:
        fake.close()
    rec["steps"]["calibrate"]["group"] = rec["steps"]["clean"]["group"] = "calibrate"
    with MetricsExporter(0) as exporter:
        exporter.update(rec)
        got = scrape(exporter.port)
    assert got['flow_step_fused{group="calibrate",step="clean"}'] == 1.0
    assert got['flow_step_fused{group="calibrate",step="calibrate"}'] == 1.0
    assert not any(k.startswith("flow_step_fused") and 'step="hillas"' in k for k in got)
    assert got['flow_step_events_in_total{step="clean"}'] == rec["steps"]["clean"]["in"]
