"""Shared test set-up: offscreen Qt, writable caches, real data, and no IERS downloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba"))
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "mpl"))
_shared = ROOT.parent / "shared" / "data"
if "FLOW_DATA_DIR" not in os.environ and _shared.is_dir():
    os.environ["FLOW_DATA_DIR"] = str(_shared)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# worker processes import tests.steps: make the repository importable for them too
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

try:
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
except ImportError:  # astropy is a dependency; keep conftest importable regardless
    pass


@pytest.fixture
def gui_window(qtbot, qapp):
    """Factory of shown GUI main windows on a monitor (and control) address; closed at the end.

    Qt is imported only by the tests that use it (pytest-qt provides ``qtbot``/``qapp``).
    """
    from flow.observe.control import ControlClient
    from flow.observe.monitor import MonitorClient
    from gui import app as gui_app
    from gui import theme

    theme.apply(qapp)
    made = []

    def make(monitor: str, control: str | None = None, token: str = "",
             stale_s: float = 3.0):
        mon = MonitorClient(monitor, stale_s=stale_s).start()
        ctl = ControlClient(control, token) if control else None
        window = gui_app.MainWindow(mon, ctl)
        window.controls.confirm_stop = False
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for w in made:
        w.close()
