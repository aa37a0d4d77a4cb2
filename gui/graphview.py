"""The pipeline graph, left to right: layers by longest path from the producers, one box per step.
A long chain is wrapped into bands (left to right, then the next band below) when that draws the boxes
larger in the view, e.g. the nine steps of configs/demo.yaml in two bands.

A box shows the step's name and kind, rate, queue, workers (current, min–max) and busy fraction; its
colour goes green -> amber -> red with the load (busy fraction), and the bottleneck gets a thick
yellow outline. The steps of a fused chain (the ``group`` of their statistics: they share worker
processes) sit on one dashed frame labelled "fused · FIRST STEP", drawn per band when the chain
wraps. `node_text(name)` gives what a box shows and `group_frames()` the frames drawn (tests read them).
"""

from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from flow.observe.monitor import topo_layers

from . import theme
from .fmt import fmt_count, fmt_rate

NODE_W, NODE_H = 178.0, 96.0
GAP_X, GAP_Y = 70.0, 26.0
BAND_GAP = 30.0          # extra space between the bands of a wrapped long chain


class NodeItem(QtWidgets.QGraphicsPathItem):
    """One step box: a rounded rectangle with a title and four lines of numbers."""

    def __init__(self, step: dict):
        super().__init__()
        self.name = step["name"]
        self.kind = step.get("kind", "")
        path = QtGui.QPainterPath()
        path.addRoundedRect(QtCore.QRectF(0, 0, NODE_W, NODE_H), 8, 8)
        self.setPath(path)
        self.title = QtWidgets.QGraphicsSimpleTextItem(self.name, self)
        font = QtGui.QFont()
        font.setPointSizeF(10.5)
        font.setBold(True)
        self.title.setFont(font)
        self.title.setBrush(QtGui.QColor("#ffffff"))
        self.title.setPos(10, 6)
        self.kind_label = QtWidgets.QGraphicsSimpleTextItem(self.kind, self)
        small = QtGui.QFont()
        small.setPointSizeF(7.5)
        self.kind_label.setFont(small)
        self.kind_label.setBrush(QtGui.QColor(255, 255, 255, 150))
        self.kind_label.setPos(NODE_W - 10 - self.kind_label.boundingRect().width(), 9)
        self.body = QtWidgets.QGraphicsSimpleTextItem("", self)
        mono = QtGui.QFont("DejaVu Sans Mono")
        mono.setStyleHint(QtGui.QFont.Monospace)
        mono.setPointSizeF(8.5)
        self.body.setFont(mono)
        self.body.setBrush(QtGui.QColor(255, 255, 255, 225))
        self.body.setPos(10, 27)
        self.set_stats(None, step)

    def set_stats(self, s: dict | None, step: dict | None = None) -> None:
        if s is None:
            lo = (step or {}).get("workers_min", "?")
            hi = (step or {}).get("workers_max", "?")
            self.body.setText(f"rate     –\nqueue    –\nworkers  –  ({lo}–{hi})\nbusy     –")
            self.setBrush(theme.load_colour(None))
            self.setPen(QtGui.QPen(QtGui.QColor(theme.GRID), 1.2))
            self.setToolTip(self.name)
            return
        busy = s.get("busy")
        self.body.setText(
            f"rate     {fmt_rate(s.get('rate'))}\n"
            f"queue    {fmt_count(s.get('queue'))}\n"
            f"workers  {s.get('workers', 0)}  ({s.get('workers_min', '?')}–{s.get('workers_max', '?')})\n"
            f"busy     {'–' if busy is None else f'{100 * busy:.0f} %'}")
        self.setBrush(theme.load_colour(busy))
        if s.get("bottleneck"):
            self.setPen(QtGui.QPen(QtGui.QColor(theme.BOTTLENECK), 3.5))
        else:
            self.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 60), 1.2))
        p50, p99 = s.get("latency_p50_ms"), s.get("latency_p99_ms")
        lat = "–" if p50 is None else f"{p50:.1f} / {p99:.1f} ms"
        self.setToolTip(
            f"<b>{self.name}</b> ({self.kind}){' — bottleneck' if s.get('bottleneck') else ''}<br>"
            f"in {fmt_count(s.get('in'))}, out {fmt_count(s.get('out'))}<br>"
            f"rate {fmt_rate(s.get('rate'))} (run average {fmt_rate(s.get('rate_avg'))})<br>"
            f"in flight {s.get('inflight', 0)}, queued {fmt_count(s.get('queue_bytes'))} B<br>"
            f"latency p50/p99 {lat}<br>"
            f"errors {s.get('errors', 0)}, retries {s.get('retries', 0)}, "
            f"dead letters {s.get('dead_letter', 0)}")

    def text(self) -> str:
        return f"{self.name}\n{self.body.text()}"


class GraphView(QtWidgets.QGraphicsView):
    """Draws a graph record; `update_stats` recolours and relabels the boxes."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setScene(QtWidgets.QGraphicsScene(self))
        self.setRenderHints(QtGui.QPainter.Antialiasing | QtGui.QPainter.TextAntialiasing)
        self.setBackgroundBrush(QtGui.QColor(theme.PANEL))
        self.setFrameShape(QtWidgets.QFrame.NoFrame)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        self.nodes: dict[str, NodeItem] = {}
        self._steps: dict[str, dict] = {}
        self._graph: dict | None = None
        self._band: dict[str, int] = {}
        self._columns_per_band = 1
        self._stats: dict | None = None
        self._groups: dict[str, str] = {}      # step -> its fused chain's first step
        self._group_items: list = []
        self._placeholder("waiting for the pipeline graph…")

    def _placeholder(self, text: str) -> None:
        self.scene().clear()
        self.nodes = {}
        item = self.scene().addSimpleText(text)
        item.setBrush(QtGui.QColor(theme.MUTED))
        self._fit()

    def clear(self) -> None:
        self._graph = None
        self._placeholder("waiting for the pipeline graph…")

    def set_graph(self, graph: dict) -> None:
        self._graph = graph
        self._columns_per_band = self._best_columns(graph)
        self._layout()

    def _layers(self, steps: list[dict]) -> dict[int, list[str]]:
        layer = topo_layers(steps)
        columns: dict[int, list[str]] = {}
        for s in steps:
            columns.setdefault(layer[s["name"]], []).append(s["name"])
        return columns

    def _best_columns(self, graph: dict) -> int:
        """Layers per band: a long chain (e.g. the 9 steps of configs/demo.yaml) is wrapped into
        bands, left to right then top to bottom, when that draws the boxes larger in this view."""
        columns = self._layers(graph.get("steps") or [])
        n = len(columns)
        if n <= 1:
            return max(n, 1)
        vw, vh = max(self.viewport().width(), 1), max(self.viewport().height(), 1)
        height = max(len(c) for c in columns.values()) * (NODE_H + GAP_Y)

        def scale(c: int) -> float:
            bands = -(-n // c)
            return min(vw / (c * (NODE_W + GAP_X)), vh / (bands * height + (bands - 1) * BAND_GAP))
        return max(range(n, 0, -1), key=lambda c: (round(scale(c), 6), c))

    def _layout(self) -> None:
        graph = self._graph
        scene = self.scene()
        scene.clear()
        self.nodes = {}
        self._group_items = []
        self._groups = {}
        if graph is None:
            return
        steps = graph.get("steps") or []
        self._steps = {s["name"]: s for s in steps}
        columns = self._layers(steps)
        per_band = self._columns_per_band
        parents = {s["name"]: [p["name"] for p in steps if s["name"] in p.get("to", [])] for s in steps}
        row: dict[str, float] = {}
        height = max(len(c) for c in columns.values()) if columns else 1
        band_h = height * (NODE_H + GAP_Y) + BAND_GAP
        self._band = {}
        for col in sorted(columns):  # order each column by the mean row of its parents
            names = columns[col]
            names.sort(key=lambda n: (sum(row[p] for p in parents[n] if p in row)
                                      / max(1, sum(p in row for p in parents[n]))) if parents[n] else 0)
            offset = (height - len(names)) / 2.0
            band, x = divmod(col, per_band)
            for i, name in enumerate(names):
                row[name] = offset + i
                node = NodeItem(self._steps[name])
                node.setPos(x * (NODE_W + GAP_X), band * band_h + row[name] * (NODE_H + GAP_Y))
                node.setZValue(1)
                scene.addItem(node)
                self.nodes[name] = node
                self._band[name] = band
        for s in steps:
            for t in s.get("to", []):
                if t in self.nodes:
                    gap_y = (self._band[s["name"]] + 1) * band_h - (GAP_Y + BAND_GAP) / 2
                    self._add_edge(self.nodes[s["name"]], self.nodes[t],
                                   gap_y if self._band[t] > self._band[s["name"]] else None)
        self._fit()

    def _add_edge(self, a: NodeItem, b: NodeItem, gap_y: float | None = None) -> None:
        p0 = a.pos() + QtCore.QPointF(NODE_W, NODE_H / 2)
        p1 = b.pos() + QtCore.QPointF(-6, NODE_H / 2)
        path = QtGui.QPainterPath(p0)
        if gap_y is None:
            dx = max(30.0, (p1.x() - p0.x()) / 2)
            path.cubicTo(p0 + QtCore.QPointF(dx, 0), p1 - QtCore.QPointF(dx, 0), p1)
        else:  # into the next band: down through the gap between the bands, back left, in
            r = 24.0
            out_x, in_x = p0.x() + GAP_X / 2, p1.x() - GAP_X / 2 + 6
            path.cubicTo(QtCore.QPointF(out_x, p0.y()), QtCore.QPointF(out_x, p0.y()),
                         QtCore.QPointF(out_x, p0.y() + r))
            path.lineTo(out_x, gap_y - r)
            path.quadTo(out_x, gap_y, out_x - r, gap_y)
            path.lineTo(in_x + r, gap_y)
            path.quadTo(in_x, gap_y, in_x, gap_y + r)
            path.lineTo(in_x, p1.y() - r)
            path.quadTo(in_x, p1.y(), p1.x(), p1.y())
        pen = QtGui.QPen(QtGui.QColor(theme.MUTED), 1.6)
        edge = self.scene().addPath(path, pen)
        edge.setZValue(0)
        edge.setToolTip(f"{a.name} → {b.name}")
        head = QtGui.QPolygonF([p1 + QtCore.QPointF(6, 0), p1 + QtCore.QPointF(-4, -5),
                                p1 + QtCore.QPointF(-4, 5)])
        self.scene().addPolygon(head, QtGui.QPen(QtCore.Qt.NoPen), QtGui.QBrush(QtGui.QColor(theme.MUTED)))

    def update_stats(self, stats: dict | None) -> None:
        self._stats = stats
        steps = (stats or {}).get("steps") or {}
        for name, node in self.nodes.items():
            node.set_stats(steps.get(name), self._steps.get(name))
        groups = {n: str(s["group"]) for n, s in steps.items()
                  if isinstance(s, dict) and s.get("group") and n in self.nodes}
        if groups != self._groups:
            self._draw_groups(groups)

    def _draw_groups(self, groups: dict[str, str]) -> None:
        """One dashed frame per fused chain and band, behind its boxes."""
        for item in self._group_items:
            self.scene().removeItem(item)
        self._group_items = []
        self._groups = groups
        spans: dict[tuple[str, int], QtCore.QRectF] = {}
        for name, group in groups.items():
            node = self.nodes[name]
            rect = QtCore.QRectF(node.pos(), QtCore.QSizeF(NODE_W, NODE_H))
            key = (group, self._band.get(name, 0))
            spans[key] = spans[key].united(rect) if key in spans else rect
        pen = QtGui.QPen(QtGui.QColor(theme.MUTED), 1.4, QtCore.Qt.DashLine)
        for (group, _), rect in sorted(spans.items()):
            frame = self.scene().addRect(rect.adjusted(-12, -20, 12, 10), pen,
                                         QtGui.QBrush(QtGui.QColor(255, 255, 255, 14)))
            frame.setZValue(-1)
            frame.setToolTip(f"fused: these steps run in one worker process (chain of '{group}')")
            label = self.scene().addSimpleText(f"fused · {group}")
            small = QtGui.QFont()
            small.setPointSizeF(7.5)
            label.setFont(small)
            label.setBrush(QtGui.QColor(theme.MUTED))
            label.setPos(rect.left() - 6, rect.top() - 18)
            self._group_items += [frame, label]

    def group_frames(self) -> dict[str, list[str]]:
        """Fused chain (its first step) -> the steps drawn inside its frame."""
        out: dict[str, list[str]] = {}
        for name, group in self._groups.items():
            out.setdefault(group, []).append(name)
        return out

    def node_text(self, name: str) -> str:
        return self.nodes[name].text()

    def _fit(self) -> None:
        rect = self.scene().itemsBoundingRect().adjusted(-16, -16, 16, 16)
        self.setSceneRect(rect)
        self.fitInView(rect, QtCore.Qt.KeepAspectRatio)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self._graph is not None and self._best_columns(self._graph) != self._columns_per_band:
            self._columns_per_band = self._best_columns(self._graph)
            stats, self._stats = self._stats, None
            self._layout()
            self.update_stats(stats)
        self._fit()
