"""Run controls: pause/resume, drain, stop, worker bounds of a step, tapping an edge.

Commands go through `flow.observe.control.ControlClient` in a short-lived thread, so the window never waits on
the network; the reply comes back as the ``replied`` signal (queued into the GUI thread).
"""

from __future__ import annotations

import threading

from PyQt5 import QtCore, QtWidgets

from flow.observe.control import ControlClient


class ControlRunner(QtCore.QObject):
    """Sends commands off the GUI thread; emits ``replied(cmd, kwargs, reply)``."""

    replied = QtCore.pyqtSignal(str, dict, dict)

    def __init__(self, client: ControlClient | None, parent: QtCore.QObject | None = None):
        super().__init__(parent)
        self.client = client
        self._lock = threading.Lock()  # one command at a time, in order

    def send(self, cmd: str, **kw: object) -> None:
        if self.client is None:
            self.replied.emit(cmd, kw, {"ok": False, "error": "no control address (--control)"})
            return

        def work() -> None:
            with self._lock:
                reply = self.client.send(cmd, **kw)
            self.replied.emit(cmd, kw, reply)

        threading.Thread(target=work, name=f"flow-control-{cmd}", daemon=True).start()


class ControlBar(QtWidgets.QWidget):
    """A row of controls; enabled only when a control address was given."""

    def __init__(self, runner: ControlRunner, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.confirm_stop = True
        self._bounds: dict[str, tuple[int, int]] = {}
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(6)

        self.pause_button = QtWidgets.QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.clicked.connect(self._pause_clicked)
        self.drain_button = QtWidgets.QPushButton("Drain")
        self.drain_button.setToolTip("stop the producers; finish what is queued")
        self.drain_button.clicked.connect(lambda: self.runner.send("drain"))
        self.stop_button = QtWidgets.QPushButton("Stop")
        self.stop_button.setToolTip("abort the run now")
        self.stop_button.clicked.connect(self._stop_clicked)
        for b in (self.pause_button, self.drain_button, self.stop_button):
            lay.addWidget(b)
        lay.addSpacing(18)

        lay.addWidget(QtWidgets.QLabel("workers of"))
        self.step_box = QtWidgets.QComboBox()
        self.step_box.setMinimumWidth(120)
        self.step_box.currentTextChanged.connect(self._load_bounds)
        self.min_spin = QtWidgets.QSpinBox()
        self.max_spin = QtWidgets.QSpinBox()
        lay.addWidget(self.step_box)
        for spin, label in ((self.min_spin, "min"), (self.max_spin, "max")):
            spin.setRange(1, 4096)  # a stager keeps at least one worker (the router refuses 0)
            lay.addWidget(QtWidgets.QLabel(label))
            lay.addWidget(spin)
        self.apply_button = QtWidgets.QPushButton("Apply")
        self.apply_button.clicked.connect(self.apply_bounds)
        lay.addWidget(self.apply_button)
        lay.addSpacing(18)

        lay.addWidget(QtWidgets.QLabel("tap"))
        self.edge_box = QtWidgets.QComboBox()
        self.edge_box.setMinimumWidth(190)
        self.edge_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToContents)
        self.tap_button = QtWidgets.QPushButton("Tap")
        self.tap_button.setToolTip("publish ~1 event/s of this edge to the event display")
        self.tap_button.clicked.connect(lambda: self._tap(True))
        self.untap_button = QtWidgets.QPushButton("Untap")
        self.untap_button.clicked.connect(lambda: self._tap(False))
        for w in (self.edge_box, self.tap_button, self.untap_button):
            lay.addWidget(w)
        lay.addStretch(1)
        if runner.client is None:
            self.setEnabled(False)
            self.setToolTip("read-only: start the GUI with --control ADDR --token-file F")

    def set_graph(self, graph: dict | None) -> None:
        steps = (graph or {}).get("steps") or []
        # only stagers have a worker pool to scale (a router refuses the others)
        scalable = [s["name"] for s in steps if s.get("kind") == "stager"]
        edges = [f"{s['name']}->{t}" for s in steps for t in s.get("to", [])]
        self._bounds = {s["name"]: (s.get("workers_min", 1), s.get("workers_max", 1)) for s in steps}
        for box, items in ((self.step_box, scalable), (self.edge_box, edges)):
            if [box.itemText(i) for i in range(box.count())] != items:
                current = box.currentText()
                box.blockSignals(True)
                box.clear()
                box.addItems(items)
                if current in items:
                    box.setCurrentText(current)
                box.blockSignals(False)
        self._load_bounds(self.step_box.currentText())

    def update_stats(self, stats: dict | None) -> None:
        state = (stats or {}).get("state")
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(state == "paused")
        self.pause_button.setText("Resume" if state == "paused" else "Pause")
        self.pause_button.blockSignals(False)
        for name, s in ((stats or {}).get("steps") or {}).items():
            self._bounds[name] = (s.get("workers_min", 1), s.get("workers_max", 1))

    def _load_bounds(self, name: str) -> None:
        if name in self._bounds:
            lo, hi = self._bounds[name]
            self.min_spin.setValue(int(lo))
            self.max_spin.setValue(int(hi))

    def apply_bounds(self) -> None:
        step = self.step_box.currentText()
        if step:
            lo, hi = self.min_spin.value(), self.max_spin.value()
            self.runner.send("scale", step=step, min=lo, max=hi)

    def _pause_clicked(self, checked: bool) -> None:
        self.runner.send("pause" if checked else "resume")

    def _stop_clicked(self) -> None:
        if self.confirm_stop:
            answer = QtWidgets.QMessageBox.question(
                self, "Stop the run", "Abort the run now? Workers are stopped and files closed.")
            if answer != QtWidgets.QMessageBox.Yes:
                return
        self.runner.send("stop")

    def _tap(self, on: bool) -> None:
        edge = self.edge_box.currentText()
        if edge:
            self.runner.send("tap", edge=edge, on=on)
