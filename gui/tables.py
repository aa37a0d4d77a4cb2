"""Tables and lists: steps, workers, dead letters (traceback on double-click) and the log pane."""

from __future__ import annotations

import html
import time

from PyQt5 import QtCore, QtGui, QtWidgets

from . import theme

ALIGN_RIGHT = QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter


class _Table(QtWidgets.QTableWidget):
    """A read-only table whose rows are rewritten in place (no flicker, selection kept)."""

    columns: tuple[str, ...] = ()
    numeric: tuple[bool, ...] = ()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(0, len(self.columns), parent)
        self.setHorizontalHeaderLabels(self.columns)
        self.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(21)
        font = self.font()
        font.setPointSizeF(9)
        self.setFont(font)
        self.setShowGrid(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        header.setStretchLastSection(True)

    def set_rows(self, rows: list[list[str]], colours: list[str | None] | None = None) -> None:
        if self.rowCount() != len(rows):
            self.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = self.item(r, c)
                if item is None:
                    item = QtWidgets.QTableWidgetItem()
                    if self.numeric[c]:
                        item.setTextAlignment(ALIGN_RIGHT)
                    self.setItem(r, c, item)
                if item.text() != text:
                    item.setText(text)
            if colours and colours[r]:
                self.item(r, 0).setForeground(QtGui.QColor(colours[r]))

    def cell(self, row: int, column: str) -> str:
        return self.item(row, self.columns.index(column)).text()

    def row_of(self, first_cell: str) -> int:
        for r in range(self.rowCount()):
            if self.item(r, 0) and self.item(r, 0).text() == first_cell:
                return r
        raise KeyError(first_cell)


def _int(n: int | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def _rate(r: float | None) -> str:
    return "–" if r is None else (f"{r:.1f}" if r < 100 else f"{r:,.0f}")


class StepTable(_Table):
    columns = ("step", "in", "out", "ev/s", "queue", "workers", "busy", "p50/p99",
               "errors", "retries", "dead")
    numeric = (False, True, True, True, True, True, True, True, True, True, True)

    def update_stats(self, stats: dict | None, order: list[str]) -> None:
        steps = (stats or {}).get("steps") or {}
        names = [n for n in order if n in steps] + [n for n in steps if n not in order]
        rows = []
        for name in names:
            s = steps[name]
            p50, p99 = s.get("latency_p50_ms"), s.get("latency_p99_ms")
            rows.append([
                name + (" ⚑" if s.get("bottleneck") else ""), _int(s.get("in")),
                _int(s.get("out")), _rate(s.get("rate")), _int(s.get("queue")),
                f"{s.get('workers', 0)} ({s.get('workers_min', '?')}–{s.get('workers_max', '?')})",
                "–" if s.get("busy") is None else f"{100 * s['busy']:.0f} %",
                "–" if p50 is None else f"{p50:.1f} / {'–' if p99 is None else f'{p99:.1f}'}",
                _int(s.get("errors")), _int(s.get("retries")), _int(s.get("dead_letter"))])
        index = {n: i for i, n in enumerate(order)}
        self.set_rows(rows, [theme.step_colour(index.get(n, 0)) for n in names])

    def row_of(self, first_cell: str) -> int:
        for r in range(self.rowCount()):
            if self.item(r, 0) and self.item(r, 0).text().split(" ")[0] == first_cell:
                return r
        raise KeyError(first_cell)


class WorkerTable(_Table):
    columns = ("host", "pid", "step", "state", "CPU %", "RSS MB", "events", "errors")
    numeric = (False, True, False, False, True, True, True, True)

    def update_stats(self, stats: dict | None) -> None:
        workers = sorted((stats or {}).get("workers") or [],
                         key=lambda w: (str(w.get("step")), str(w.get("host")), w.get("pid") or 0))
        self.set_rows([[str(w.get("host", "")), str(w.get("pid", "")), str(w.get("step", "")),
                        str(w.get("state", "")), f"{w.get('cpu') or 0:.0f}",
                        f"{(w.get('rss') or 0) / 2**20:.0f}", _int(w.get("done")),
                        _int(w.get("errors"))] for w in workers])


class TracebackDialog(QtWidgets.QDialog):
    def __init__(self, entry: dict, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"dead letter {entry.get('key')} in {entry.get('step')}")
        self.resize(760, 420)
        lay = QtWidgets.QVBoxLayout(self)
        head = QtWidgets.QLabel(
            f"<b>{html.escape(str(entry.get('exception', '')))}</b><br>"
            f"step <b>{html.escape(str(entry.get('step')))}</b>, key "
            f"<code>{html.escape(str(entry.get('key')))}</code>, {entry.get('attempts', '?')} attempts")
        head.setWordWrap(True)
        self.text = QtWidgets.QPlainTextEdit(str(entry.get("traceback") or "(no traceback)"))
        self.text.setReadOnly(True)
        self.text.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.FixedFont))
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(head)
        lay.addWidget(self.text)
        lay.addWidget(buttons)


class DeadLetterList(QtWidgets.QListWidget):
    """Dead letters of the run, newest last; double-click (or Enter) opens the traceback."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.entries: list[dict] = []
        self.itemActivated.connect(lambda item: self.open_entry(self.row(item)))
        self.setAlternatingRowColors(True)

    def add(self, entries: list[dict]) -> None:
        for e in entries:
            self.entries.append(e)
            item = QtWidgets.QListWidgetItem(
                f"{e.get('step')}  ·  {e.get('key')}  ·  {e.get('exception', '')}  "
                f"({e.get('attempts', '?')} attempts)")
            item.setForeground(QtGui.QColor(theme.LEVEL_COLOURS["ERROR"]))
            item.setToolTip("double-click for the traceback")
            self.addItem(item)
        del self.entries[:-5000]
        while self.count() > len(self.entries):
            self.takeItem(0)

    def clear_entries(self) -> None:
        self.entries = []
        self.clear()

    def open_entry(self, row: int) -> TracebackDialog:
        dialog = TracebackDialog(self.entries[row], self)
        dialog.setAttribute(QtCore.Qt.WA_DeleteOnClose)
        dialog.show()
        return dialog


class LogPane(QtWidgets.QPlainTextEdit):
    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(3000)
        self.setFont(QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.FixedFont))

    def add(self, records: list[dict]) -> None:
        at_end = self.verticalScrollBar().value() >= self.verticalScrollBar().maximum() - 4
        for r in records:
            level = str(r.get("level", "INFO")).upper()
            stamp = time.strftime("%H:%M:%S", time.localtime(r.get("t") or time.time()))
            colour = theme.LEVEL_COLOURS.get(level, theme.TEXT)
            self.appendHtml(f"<span style='color:{theme.MUTED}'>{stamp}</span> "
                            f"<span style='color:{colour}'>{level:<7}</span> "
                            f"<span style='color:{colour}'>{html.escape(str(r.get('message', '')))}</span>")
        if at_end:
            self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())

    def note(self, message: str, level: str = "INFO") -> None:
        self.add([{"t": time.time(), "level": level, "message": message}])

