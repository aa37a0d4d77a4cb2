"""The Qt monitor against the fake router (tests/fake_pipeline.py), offscreen, on real tcp sockets."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("pytestqt")

from gui import app as gui_app  # noqa: E402
from tests.fake_pipeline import FakePipeline  # noqa: E402

pytestmark = pytest.mark.qt
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def make_window(gui_window):
    def make(fake: FakePipeline, stale_s: float = 3.0, control: bool = True):
        return gui_window(fake.pub_addr, fake.ctl_addr if control else None, fake.token, stale_s)

    return make


def test_counts_per_step_after_n_records(qtbot, make_window):
    with FakePipeline(interval=None) as fake:
        window = make_window(fake)
        qtbot.waitUntil(lambda: window.graph is not None, timeout=5000)
        last = fake.publish(7)
        table = window.step_table

        def shown():
            assert table.rowCount() == len(fake.steps)
            for name, s in last["steps"].items():
                row = table.row_of(name)
                assert table.cell(row, "in") == f"{s['in']:,}"
                assert table.cell(row, "out") == f"{s['out']:,}"
        qtbot.waitUntil(shown, timeout=5000)
        assert last["steps"]["clean"]["in"] == 7 * 100 - 2 * 5
        assert "rate     100 ev/s" in window.graph_view.node_text("clean")
        assert "workers  1  (1–4)" in window.graph_view.node_text("clean")
        assert window.worker_table.rowCount() == len(last["workers"])
        assert window.state_label.text() == "RUNNING"
        assert "70.0 %" not in window.progress.format()  # 700 of 10 000 events
        assert window.progress.format().startswith("7.0 %")
        # the scaler decision of record 3 is a marker on the worker plot, its reason the tooltip
        marks = window.plots.markers.data
        assert len(marks) == 1 and "queue growing" in marks[0]["data"]
        # the dead letter of record 3 is listed and opens its traceback
        assert len(window.dead_letters.entries) == 1
        dialog = window.dead_letters.open_entry(0)
        assert "ValueError: image has NaN pixels" in dialog.text.toPlainText()
        dialog.close()
        x, y = window.plots.curve_data("rate", "read")
        assert len(x) == 7 and y[-1] == 100.0


def test_scale_from_gui_reaches_router_and_comes_back(qtbot, make_window):
    with FakePipeline(interval=0.2) as fake:
        window = make_window(fake)
        qtbot.waitUntil(lambda: window.step_table.rowCount() == len(fake.steps), timeout=5000)
        bar = window.controls
        bar.step_box.setCurrentText("clean")
        assert bar.max_spin.value() == 4
        bar.min_spin.setValue(2)
        bar.max_spin.setValue(7)
        with qtbot.waitSignal(window.runner.replied, timeout=5000) as reply:
            bar.apply_button.click()
        assert reply.args[2] == {"ok": True, "error": None}
        assert fake.commands[-1]["cmd"] == "scale"
        assert (fake.commands[-1]["step"], fake.commands[-1]["min"], fake.commands[-1]["max"]) == \
            ("clean", 2, 7)

        def shown():
            row = window.step_table.row_of("clean")
            assert window.step_table.cell(row, "workers") == "2 (2–7)"
            assert "workers  2  (2–7)" in window.graph_view.node_text("clean")
        qtbot.waitUntil(shown, timeout=5000)
        assert window.monitor.snapshot().stats["steps"]["clean"]["workers_max"] == 7

        with qtbot.waitSignal(window.runner.replied, timeout=5000):
            bar.pause_button.click()
        qtbot.waitUntil(lambda: window.state_label.text() == "PAUSED", timeout=5000)
        assert bar.pause_button.text() == "Resume"


def test_publisher_stops_then_new_run_on_same_address(qtbot, make_window):
    first = FakePipeline(interval=0.1, run_id="run-one").start()
    addr = first.pub_addr
    window = make_window(first, stale_s=1.0)
    try:
        qtbot.waitUntil(lambda: window.run_label.text() == "run run-one"
                        and window.state_label.text() == "RUNNING", timeout=5000)
    finally:
        first.close()
    qtbot.waitUntil(lambda: "NOT RUNNING" in window.state_label.text(), timeout=5000)
    steps = [{"name": "gen", "kind": "producer", "to": ["sink"], "workers_min": 1, "workers_max": 1},
             {"name": "sink", "kind": "consumer", "to": [], "workers_min": 1, "workers_max": 1}]
    with FakePipeline(pub_addr=addr, interval=0.1, run_id="run-two", steps=steps, tap=None):
        qtbot.waitUntil(lambda: window.run_label.text() == "run run-two"
                        and window.state_label.text() == "RUNNING", timeout=10000)
        qtbot.waitUntil(lambda: window.step_table.rowCount() == 2, timeout=5000)
        assert set(window.graph_view.nodes) == {"gen", "sink"}
        assert all(t >= 0 for t in window.plots.curve_data("rate", "gen")[0])
        assert ("rate", "clean") not in window.plots.curves  # the old run's plots are gone
        assert window.events.image is None


def test_late_joining_gui_shows_graph(qtbot, make_window):
    with FakePipeline(interval=None) as fake:
        fake.publish(3)
        window = make_window(fake)
        qtbot.waitUntil(lambda: set(window.graph_view.nodes) == {s["name"] for s in fake.steps},
                        timeout=5000)
        # graph boxes in layers: read < calibrate < clean < hillas < {write, histo}
        x = {n: node.pos().x() for n, node in window.graph_view.nodes.items()}
        assert x["read"] < x["calibrate"] < x["clean"] < x["hillas"] < x["write"] == x["histo"]
        qtbot.waitUntil(lambda: window.step_table.rowCount() == len(fake.steps), timeout=5000)


def test_event_display_draws_sample(qtbot, make_window):
    with FakePipeline(interval=None) as fake:
        window = make_window(fake)
        qtbot.waitUntil(lambda: bool(window.events.geometries), timeout=5000)
        event = fake.call(fake.publish_sample)
        fake.publish(1)
        display = window.events
        qtbot.waitUntil(lambda: display.image is not None, timeout=5000)
        tel = display.tel_id
        np.testing.assert_array_equal(display.image, event["tels"][tel]["image"])
        n_pix = len(fake.context["subarray"]["tels"][tel]["camera"]["pix_x"])
        assert len(display.pixels.data) == n_pix
        assert len(display.mask_outline.data) == int(event["tels"][tel]["mask"].sum())
        # the ellipse is centred on the Hillas centroid, in the same frame as the pixels
        ex, ey = display.ellipse.getData()
        p = event["tels"][tel]["params"]
        assert abs(ex.mean() - p["hillas_fov_lon"]) < 1e-2 and abs(ey.mean() - p["hillas_fov_lat"]) < 1e-2
        # and it lies on the bright pixels: the charge-weighted pixel centroid matches
        w = np.where(event["tels"][tel]["mask"], display.image, 0)
        lon = display.pixels.data["x"]
        assert abs((w * lon).sum() / w.sum() - p["hillas_fov_lon"]) < 1e-6
        # choosing the other telescope redraws
        other = [t for t in (1, 2) if t != tel][0]
        display.tel_box.setCurrentIndex(display.tel_box.findData(other))
        display.tel_box.activated.emit(display.tel_box.currentIndex())
        assert display.tel_id == other
        np.testing.assert_array_equal(display.image, event["tels"][other]["image"])


def test_screenshot_of_fake_pipeline(qtbot, make_window, tmp_path):
    with FakePipeline(interval=0.02, time_step=5.0, wobble=True) as fake:
        window = make_window(fake)
        qtbot.waitUntil(lambda: fake.k >= 60 and window.events.image is not None, timeout=15000)
        qtbot.wait(600)
        window.refresh()
        out = tmp_path / "gui.png"
        assert gui_app.grab(window, str(out))
        assert out.stat().st_size > 20_000
        if os.environ.get("FLOW_UPDATE_SCREENSHOT"):
            gui_app.grab(window, str(DOCS / "gui.png"))


def test_main_screenshot_and_exit(tmp_path):
    with FakePipeline(interval=0.1) as fake:
        token = tmp_path / "token"
        token.write_text(fake.token + "\n")
        out = tmp_path / "shot.png"
        # the documented command, `flow gui --connect ADDR`: its own process and QApplication (an
        # in-process app.exec_()/quit() would leak into the other Qt tests of this session)
        proc = subprocess.run(
            [sys.executable, "-m", "flow.cli", "gui", "--connect", fake.pub_addr, "--control",
             fake.ctl_addr, "--token-file", str(token), "--screenshot", str(out),
             "--exit-after", "3"],
            cwd=Path(__file__).resolve().parents[1], capture_output=True, timeout=120,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert out.stat().st_size > 10_000


def test_the_header_counts_a_fused_chains_workers_once():
    steps = {"read": {"kind": "producer", "workers": 1, "group": None},
             "a": {"kind": "stager", "workers": 2, "group": "a"},
             "b": {"kind": "stager", "workers": 2, "group": "a"},
             "c": {"kind": "stager", "workers": 3, "group": None},
             "write": {"kind": "consumer", "workers": 1}}
    assert gui_app.worker_count(steps) == 1 + 2 + 3 + 1
