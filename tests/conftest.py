"""Shared test set-up: offscreen Qt, writable caches, real data, and no IERS downloads.

Real sim_telarray files come only through `stages.datasets` (``$FLOW_DATA_DIR``, else the user
cache, else a download of the eventio sdist): a test that needs one asks the ``data_file`` fixture,
which downloads it when missing, so the test runs on a fresh machine instead of skipping.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLCONFIGDIR", str(ROOT / ".cache" / "mpl"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from flow.engine.memory import default_numba_cache  # noqa: E402

default_numba_cache()   # the kernels `make venv` compiled: tests load them as users' runs do
# worker processes import tests.steps: make the repository importable for them too
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)

try:
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
except ImportError:  # astropy is a dependency; keep conftest importable regardless
    pass


GAMMA_TEST = "gamma_test.simtel.gz"
SST1M = "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst"


@pytest.fixture(scope="session")
def data_file():
    """``data_file(name) -> Path`` of a real data file, downloaded into the user cache if missing.

    A file that cannot be found or fetched fails the test with `DataError` (saying what to set).
    """
    from stages.datasets import find_dataset

    return find_dataset


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


@pytest.fixture
def step_module(tmp_path, monkeypatch):
    """``make(name, source)``: writes module ``name`` in a directory on sys.path and on the
    PYTHONPATH that worker processes get, for steps a test defines in its own text."""
    where = tmp_path / "step_modules"
    where.mkdir()
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.setenv("PYTHONPATH", str(where))

    def make(name: str, source: str) -> None:
        (where / f"{name}.py").write_text(source)
    return make
