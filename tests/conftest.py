"""Shared test set-up: offscreen Qt, writable caches, real data, and no IERS downloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
