"""Rate, queue depth and worker count per step over time (rolling window), sharing one time axis.

Fed with `MonitorState.history` (``(t, {step: (rate, queue, workers)})``) and the run's scaler
decisions, which appear as markers on the worker plot; hovering one shows its reason.
"""

from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtWidgets

from . import theme


def _decision_tip(x: float, y: float, data: object) -> str:
    return str(data)


class TimePlots(QtWidgets.QWidget):
    """Three stacked plots with a linked time axis and one legend."""

    def __init__(self, window_s: float = 300.0, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.window_s = window_s
        self.layout_widget = pg.GraphicsLayoutWidget()
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.layout_widget)
        self.plots: dict[str, pg.PlotItem] = {}
        labels = [("rate", "rate (events/s)"), ("queue", "queue depth (events)"),
                  ("workers", "workers")]
        for i, (key, label) in enumerate(labels):
            axis = pg.DateAxisItem(orientation="bottom")
            plot = self.layout_widget.addPlot(row=i, col=0, axisItems={"bottom": axis})
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setLabel("left", label, color=theme.MUTED)
            plot.getAxis("left").setWidth(58)
            plot.setMenuEnabled(False)
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            if i < len(labels) - 1:
                plot.getAxis("bottom").setStyle(showValues=False)
            if i:
                plot.setXLink(self.plots["rate"])
            self.plots[key] = plot
        self.legend = self.plots["rate"].addLegend(offset=(6, 2), colCount=6,
                                                     labelTextColor=theme.TEXT, labelTextSize="8pt")
        self.legend.setBrush(pg.mkBrush(22, 24, 29, 200))
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.markers = pg.ScatterPlotItem(size=11, symbol="t", pen=pg.mkPen("#ffffff", width=1),
                                          brush=pg.mkBrush(theme.BOTTLENECK), hoverable=True,
                                          tip=_decision_tip, hoverSize=15)
        self.markers.setZValue(10)
        self.plots["workers"].addItem(self.markers)
        self.steps: list[str] = []

    def reset(self) -> None:
        for plot in self.plots.values():
            for item in [c for (k, _), c in self.curves.items() if self.plots[k] is plot]:
                plot.removeItem(item)
        self.legend.clear()
        self.curves.clear()
        self.markers.clear()
        self.steps = []

    def set_steps(self, names: list[str]) -> None:
        if names == self.steps:
            return
        self.reset()
        self.steps = list(names)
        for i, name in enumerate(names):
            colour = theme.step_colour(i)
            for key in self.plots:
                pen = pg.mkPen(colour, width=2)
                curve = self.plots[key].plot([], [], pen=pen, name=name if key == "rate" else None,
                                             stepMode=None)
                curve.setClipToView(True)
                self.curves[(key, name)] = curve

    def update_history(self, history: list[tuple[float, dict]], decisions: list[dict],
                       now: float | None = None) -> None:
        now = now or (history[-1][0] if history else time.time())
        t = np.array([h[0] for h in history], dtype=float)
        for col, key in enumerate(("rate", "queue", "workers")):
            for name in self.steps:
                y = np.array([h[1].get(name, (np.nan,) * 3)[col] for h in history], dtype=float)
                curve = self.curves[(key, name)]
                if key == "workers" and len(t):  # a staircase: counts change between records
                    tx = np.repeat(t, 2)[1:]
                    yy = np.repeat(y, 2)[:-1]
                    curve.setData(tx, yy)
                else:
                    curve.setData(t, y)
        recent = [d for d in decisions if d.get("t", 0) >= now - self.window_s]
        if recent:
            index = {n: i for i, n in enumerate(self.steps)}
            self.markers.setData(
                x=[d["t"] for d in recent], y=[d.get("new", 0) for d in recent],
                data=[f"{d.get('step')}: {d.get('old')} → {d.get('new')} workers\n{d.get('reason', '')}"
                      for d in recent],
                brush=[pg.mkBrush(theme.step_colour(index.get(d.get("step"), 0))) for d in recent])
        else:
            self.markers.clear()
        # a young run fills the plot (at least 30 s shown); later the window rolls
        left = now - self.window_s
        if len(t):
            left = min(max(left, float(t[0])), now - 30.0)
        self.plots["rate"].setXRange(left, now + 2, padding=0)
        for col, key in enumerate(("rate", "queue", "workers")):
            # from zero, with head room for the legend; whole ticks for worker counts
            top = max([h[1][n][col] for h in history for n in h[1] if h[1][n][col] is not None] or [1])
            top = max(float(top), 1.0)
            head = 1.35 if key == "rate" else 1.12
            self.plots[key].setYRange(0, top * head, padding=0)
            if key == "workers":
                self.plots[key].getAxis("left").setTickSpacing(max(1, int(np.ceil(top / 4))), 1)

    def curve_data(self, key: str, step: str) -> tuple[np.ndarray, np.ndarray]:
        return self.curves[(key, step)].getData()

