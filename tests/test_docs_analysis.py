"""docs/analysis.md runs as written: every bash block, in order, end to end on small data."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "analysis.md"


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_doc_has_every_step():
    script = "\n".join(bash_blocks(DOC.read_text()))
    for tool in ("flow run", "ctapipe-fileinfo", "ctapipe-train-energy-regressor",
                 "ctapipe-train-disp-reconstructor", "ctapipe-train-particle-classifier",
                 "configs/simtel_apply_models.yaml", "configs/toy_apply_models.yaml",
                 "ctapipe-optimize-event-selection", "ctapipe-compute-irf"):
        assert tool in script, tool


def test_every_command_runs_end_to_end(tmp_path):
    """Run from a scratch directory holding ``configs/`` (tools' logs and dead letters go there)."""
    script = "set -euo pipefail\n" + "\n".join(bash_blocks(DOC.read_text()))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    env = dict(os.environ, OUT=str(tmp_path / "analysis"), N_EVENTS="120", PYTHONPATH=str(ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-4000:]}"
    out = tmp_path / "analysis"
    from astropy.io import fits
    from ctapipe.io import read_table

    with fits.open(out / "irf.fits") as hdus:
        assert {"EFFECTIVE AREA", "ENERGY DISPERSION", "PSF", "BACKGROUND"} <= {h.name for h in hdus}
    energy = read_table(out / "sst1m_dl2_models.h5", "/dl2/event/subarray/energy/ExtraTreesRegressor")
    assert energy["ExtraTreesRegressor_is_valid"].sum() > 0
    disp = read_table(out / "sst1m_dl2_models.h5", "/dl2/event/subarray/geometry/disp")
    assert len(disp) == len(energy)
    assert "EFFECTIVE AREA" in done.stdout
