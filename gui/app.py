"""`flow gui`: the Qt monitor of a running pipeline (docs/monitoring.md).

Records are read by `flow.observe.monitor.MonitorClient`'s background thread; the window polls its snapshot
four times a second and renders only the newest state, so a slow screen never slows the pipeline.

    flow gui --connect tcp://127.0.0.1:5560 [--control tcp://127.0.0.1:5561 --token-file F]
             [--keys DIR] [--screenshot out.png --exit-after 5]
"""

from __future__ import annotations

import argparse
import html
import os
import sys

from PyQt5 import QtCore, QtGui, QtWidgets

from flow.errors import FlowError
from flow.observe.control import ControlClient, read_token
from flow.observe.monitor import MonitorClient, MonitorState

from . import theme
from .controls import ControlBar, ControlRunner
from .eventdisplay import EventDisplay
from .fmt import fmt_count, fmt_duration, fmt_rate
from .graphview import GraphView
from .options import add_options
from .plots import TimePlots
from .tables import DeadLetterList, LogPane, StepTable, WorkerTable

REFRESH_MS = 250  # at most 4 repaints per second


def worker_count(steps: dict) -> int:
    """Worker processes of a statistics record's steps: a fused chain's workers are counted once
    (every step of the chain reports the chain's workers; ``group`` names the chain by its first
    step)."""
    return sum(s.get("workers") or 0 for name, s in steps.items()
               if s.get("group") in (None, name))


class MainWindow(QtWidgets.QMainWindow):
    """The monitor window; `refresh()` renders the client's newest snapshot."""

    def __init__(self, monitor: MonitorClient, control: ControlClient | None = None,
                 window_s: float = 300.0):
        super().__init__()
        self.monitor = monitor
        self.run_id: str | None = None
        self.graph: dict | None = None
        self.context_seen: object = None
        self.sample_seen: object = None
        self.version = -1
        self.step_order: list[str] = []
        self.setWindowTitle(f"flow monitor — {monitor.address}")
        self.resize(1680, 1020)

        # header: title, state badge, progress, counters
        self.title = QtWidgets.QLabel("flow")
        font = self.title.font()
        font.setPointSizeF(13)
        font.setBold(True)
        self.title.setFont(font)
        self.run_label = QtWidgets.QLabel("")
        self.run_label.setStyleSheet(f"color: {theme.MUTED};")
        self.state_label = QtWidgets.QLabel("NOT RUNNING")
        self.state_label.setAlignment(QtCore.Qt.AlignCenter)
        self.state_label.setMinimumWidth(120)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMinimumWidth(320)
        self.progress.setFormat("total unknown")
        self.counters = QtWidgets.QLabel("")
        self.counters.setStyleSheet("font-family: monospace;")
        header = QtWidgets.QHBoxLayout()
        for w, stretch in ((self.title, 0), (self.run_label, 0), (self.state_label, 0),
                           (self.progress, 1), (self.counters, 0)):
            header.addWidget(w, stretch)
        header.setSpacing(14)

        self.runner = ControlRunner(control, self)
        self.runner.replied.connect(self._on_reply)
        self.controls = ControlBar(self.runner)

        self.graph_view = GraphView()
        self.plots = TimePlots(window_s)
        self.events = EventDisplay()
        self.step_table = StepTable()
        self.worker_table = WorkerTable()
        self.dead_letters = DeadLetterList()
        self.log = LogPane()
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.addTab(self.step_table, "Steps")
        self.tabs.addTab(self.worker_table, "Workers")
        self.tabs.addTab(self.dead_letters, "Dead letters")
        self.tabs.addTab(self.log, "Log")

        left = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        left.addWidget(self._boxed("Pipeline", self.graph_view))
        left.addWidget(self._boxed("Throughput (last 5 min)", self.plots))
        left.setSizes([270, 680])
        right = QtWidgets.QSplitter(QtCore.Qt.Vertical)
        right.addWidget(self._boxed("Event display", self.events))
        right.addWidget(self.tabs)
        right.setSizes([500, 450])
        main = QtWidgets.QSplitter(QtCore.Qt.Horizontal)
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        main.setSizes([920, 760])

        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(10, 8, 10, 6)
        lay.addLayout(header)
        lay.addWidget(self.controls)
        lay.addWidget(main, 1)
        self.setCentralWidget(central)
        self.status = self.statusBar()
        self.status.showMessage(f"connecting to {monitor.address} …")
        self._set_state("not running")

        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(REFRESH_MS)

    @staticmethod
    def _boxed(title: str, widget: QtWidgets.QWidget) -> QtWidgets.QWidget:
        box = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(box)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.setSpacing(3)
        label = QtWidgets.QLabel(title.upper())
        label.setStyleSheet(f"color: {theme.MUTED}; font-size: 8pt; letter-spacing: 1px;")
        lay.addWidget(label)
        lay.addWidget(widget, 1)
        return box

    # -- rendering
    def refresh(self) -> None:
        snap = self.monitor.snapshot()
        events = self.monitor.take_events()
        if snap.run_id != self.run_id and snap.run_id is not None:
            self._new_run(snap)
        if events.logs:
            self.log.add(events.logs)
        if events.dead_letters:
            self.dead_letters.add(events.dead_letters)
            self.tabs.setTabText(2, f"Dead letters ({len(self.dead_letters.entries)})")
        if snap.version == self.version:
            return
        self.version = snap.version
        if snap.graph is not None and snap.graph is not self.graph:
            self._set_graph(snap.graph)
        if snap.context is not None and snap.context is not self.context_seen:
            self.context_seen = snap.context
            self.events.set_context(snap.context)
            self.sample_seen = None
        if snap.sample is not None and snap.sample is not self.sample_seen and self.events.geometries:
            self.sample_seen = snap.sample
            self.events.set_sample(*snap.sample)
        self._render_stats(snap)

    def _new_run(self, snap: MonitorState) -> None:
        if self.run_id is not None:
            self.log.note(f"new run {snap.run_id} (was {self.run_id}): plots reset")
        self.run_id = snap.run_id
        self.graph = self.context_seen = self.sample_seen = None
        self.graph_view.clear()
        self.plots.reset()
        self.events.reset()
        self.dead_letters.clear_entries()
        self.tabs.setTabText(2, "Dead letters")
        self.step_order = []

    def _set_graph(self, graph: dict) -> None:
        self.graph = graph
        self.step_order = [s["name"] for s in graph.get("steps") or []]
        self.graph_view.set_graph(graph)
        self.plots.set_steps(self.step_order)
        self.controls.set_graph(graph)
        self.title.setText(graph.get("name") or "flow")
        self.run_label.setText(f"run {graph.get('run_id', '?')}")

    def _render_stats(self, snap: MonitorState) -> None:
        stats = snap.stats
        if not snap.alive:
            last = (stats or {}).get("state")
            self._set_state("not running", last if last in theme.FINAL_STATES else None)
            self.status.showMessage(
                f"no record from {self.monitor.address} for {self.monitor.stale_s:.0f} s — "
                "waiting for a pipeline (reconnects by itself)")
        elif stats is not None:
            self._set_state(stats.get("state", "running"))
            self.status.showMessage(
                f"{self.monitor.address}  ·  {snap.received} records  ·  "
                f"{snap.dropped} skipped  ·  {snap.malformed} malformed")
        if stats is None:
            return
        self.graph_view.update_stats(stats)
        self.step_table.update_stats(stats, self.step_order)
        self.worker_table.update_stats(stats)
        self.controls.update_stats(stats)
        self.plots.update_history(snap.history, snap.decisions)
        self._render_progress(stats)

    def _render_progress(self, stats: dict) -> None:
        progress, eta = stats.get("progress"), stats.get("eta_s")
        produced, total = stats.get("produced"), stats.get("total")
        if progress is not None:
            self.progress.setValue(int(1000 * min(max(progress, 0.0), 1.0)))
            self.progress.setFormat(f"{100 * progress:.1f} %  ·  {fmt_count(produced)} / "
                                    f"{fmt_count(total)}  ·  ETA {fmt_duration(eta)}")
        else:
            self.progress.setValue(0)
            self.progress.setFormat(f"{fmt_count(produced)} events  ·  total unknown")
        steps = stats.get("steps") or {}
        producers = [s for s in steps.values() if s.get("kind") == "producer"]
        rate = sum(s.get("rate") or 0.0 for s in producers)
        workers = worker_count(steps)
        errors = sum(s.get("errors") or 0 for s in steps.values())
        self.counters.setText(f"elapsed {fmt_duration(stats.get('elapsed_s'))}   "
                              f"in {fmt_rate(rate)}   workers {workers}   errors {errors}")

    def _set_state(self, state: str, last: str | None = None) -> None:
        colour = theme.STATE_COLOURS.get(state, theme.MUTED)
        text = state.upper() if last is None else f"{last.upper()} · NOT RUNNING"
        self.state_label.setText(text)
        self.state_label.setStyleSheet(
            f"background: {colour}; color: white; font-weight: bold; border-radius: 4px; "
            "padding: 3px 10px;")

    def _on_reply(self, cmd: str, kw: dict, reply: dict) -> None:
        args = " ".join(f"{k}={v}" for k, v in kw.items())
        if reply.get("ok"):
            self.log.note(f"control: {cmd} {args} → ok")
            self.status.showMessage(f"{cmd} {args}: ok", 4000)
        else:
            self.log.note(f"control: {cmd} {args} → {reply.get('error')}", "ERROR")
            self.status.showMessage(f"{cmd} {args} failed: {html.escape(str(reply.get('error')))}", 8000)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 - Qt API
        self.timer.stop()
        self.monitor.stop()
        if self.runner.client is not None:
            self.runner.client.close()
        super().closeEvent(event)


def grab(window: QtWidgets.QWidget, path: str) -> bool:
    """Save the window as PNG (works offscreen); pending layout changes are applied first."""
    QtWidgets.QApplication.processEvents()
    return window.grab().save(path, "PNG")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m gui.app``: those of ``flow gui`` (gui/options.py)."""
    p = argparse.ArgumentParser(prog="flow gui", description="Qt monitor of a running flow pipeline.")
    add_options(p)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gui"]:
        argv = argv[1:]
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Open the monitor; ``args`` already parsed (by ``flow gui``), else parsed from ``argv``."""
    args = parse_args(argv) if args is None else args
    if args.nice > 0:
        try:
            os.nice(args.nice)
        except OSError:   # not permitted here: run at normal priority
            pass
    try:
        token = read_token(args.token_file)
        monitor = MonitorClient(args.connect, keys_dir=args.keys)
        control = ControlClient(args.control, token, keys_dir=args.keys) if args.control else None
    except FlowError as exc:
        print(f"flow gui: {exc}", file=sys.stderr)
        return 2
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["flow gui"])
    theme.apply(app)
    window = MainWindow(monitor.start(), control, window_s=args.window)
    window.show()
    if args.exit_after is not None:
        def finish() -> None:
            window.refresh()
            if args.screenshot and not grab(window, args.screenshot):
                print(f"flow gui: cannot write {args.screenshot}", file=sys.stderr)
            window.close()
            app.quit()
        QtCore.QTimer.singleShot(int(args.exit_after * 1000), finish)
    elif args.screenshot:
        QtCore.QTimer.singleShot(3000, lambda: grab(window, args.screenshot))
    code = app.exec_()
    monitor.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
