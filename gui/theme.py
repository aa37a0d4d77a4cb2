"""Colours and the dark Qt palette of the monitor (one place, so every widget agrees)."""

from __future__ import annotations

import pyqtgraph as pg
from PyQt5 import QtGui, QtWidgets

BG = "#16181d"          # window
PANEL = "#1e2128"       # plots, views
PANEL_2 = "#262a33"     # table alternate rows, boxes
GRID = "#3a3f4b"
TEXT = "#d7dae0"
MUTED = "#8b93a3"
ACCENT = "#5aa9e6"
GREEN = (46, 125, 70)
AMBER = (196, 140, 24)
RED = (190, 48, 48)
BOTTLENECK = "#ffcc33"

STATE_COLOURS = {"starting": "#5aa9e6", "running": "#3fa36b", "paused": "#c48c18",
                 "draining": "#b07cd8", "finished": "#5b8def", "aborted": "#d04848",
                 "stopped": "#5b8def", "failed": "#d04848", "not running": "#5c6370"}
# states a run ends in ("stopped": drained before its producers ended; "failed": a step failed)
FINAL_STATES = ("finished", "stopped", "aborted", "failed")
LEVEL_COLOURS = {"DEBUG": MUTED, "INFO": TEXT, "WARNING": "#e0b24a", "ERROR": "#ff6b6b",
                 "CRITICAL": "#ff4f9a"}

# one colour per step, distinguishable on a dark background (Tableau 10, lightened)
STEP_COLOURS = ["#5aa9e6", "#f28e2b", "#59c27a", "#e15759", "#b07cd8", "#edc948", "#76b7b2",
                "#ff9da7", "#9c755f", "#bab0ac"]


def step_colour(index: int) -> str:
    return STEP_COLOURS[index % len(STEP_COLOURS)]


def load_colour(load: float | None) -> QtGui.QColor:
    """green (idle) -> amber (half busy) -> red (saturated); grey when unknown."""
    if load is None:
        return QtGui.QColor(PANEL_2)
    x = min(max(float(load), 0.0), 1.0)
    a, b, f = (GREEN, AMBER, x / 0.5) if x < 0.5 else (AMBER, RED, (x - 0.5) / 0.5)
    return QtGui.QColor(*(int(round(p + (q - p) * f)) for p, q in zip(a, b, strict=True)))


def apply(app: QtWidgets.QApplication) -> None:
    """Fusion style with a dark palette; pyqtgraph defaults to match."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    role = QtGui.QPalette
    for r, c in [(role.Window, BG), (role.WindowText, TEXT), (role.Base, PANEL),
                 (role.AlternateBase, PANEL_2), (role.ToolTipBase, PANEL_2), (role.ToolTipText, TEXT),
                 (role.Text, TEXT), (role.Button, PANEL_2), (role.ButtonText, TEXT),
                 (role.Highlight, "#2f5d8a"), (role.HighlightedText, "#ffffff"),
                 (role.BrightText, "#ff6b6b"), (role.Link, ACCENT), (role.PlaceholderText, MUTED)]:
        pal.setColor(r, QtGui.QColor(c))
    for r in (role.Text, role.ButtonText, role.WindowText):
        pal.setColor(role.Disabled, r, QtGui.QColor(MUTED))
    app.setPalette(pal)
    app.setStyleSheet(f"""
        QToolTip {{ color: {TEXT}; background: {PANEL_2}; border: 1px solid {GRID}; }}
        QTabWidget::pane {{ border: 1px solid {GRID}; }}
        QTabBar::tab {{ background: {PANEL}; color: {MUTED}; padding: 5px 12px; border: 1px solid {GRID};
                        border-bottom: none; }}
        QTabBar::tab:selected {{ background: {PANEL_2}; color: {TEXT}; }}
        QHeaderView::section {{ background: {PANEL_2}; color: {MUTED}; border: none;
                                border-right: 1px solid {GRID}; padding: 2px 4px; }}
        QTableView {{ gridline-color: {GRID}; }}
        QProgressBar {{ border: 1px solid {GRID}; border-radius: 3px; background: {PANEL};
                        text-align: center; color: {TEXT}; min-height: 18px; }}
        QProgressBar::chunk {{ background: #2f6f9f; border-radius: 2px; }}
        QSplitter::handle {{ background: {BG}; }}
        QGroupBox {{ border: 1px solid {GRID}; border-radius: 4px; margin-top: 8px; }}
    """)
    pg.setConfigOptions(antialias=True, background=PANEL, foreground=MUTED)
