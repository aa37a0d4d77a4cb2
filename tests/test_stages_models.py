"""ApplyModels (stages.models) equals ctapipe-apply-models on the same events, column by column."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flow.errors import DataError
from stages.io.toy_particles import ToyParticleSource
from stages.models import ApplyModels

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs" / "ctapipe"
BIN = Path(sys.executable).parent
N_EVENTS = 150


def run(*args, cwd=None):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=900)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def flow_run(config, out, *sets):
    run(sys.executable, "-m", "flow.cli", "run", ROOT / "configs" / config, "--quiet", "--set",
        f"write.path={out}", "--dead-letter", out.with_suffix(".deadletter.jsonl"),
        *[a for s in sets for a in ("--set", s)])
    return out


def tool(work, *args):
    """A ctapipe tool, run in ``work`` (its provenance log goes there)."""
    run(BIN / args[0], *args[1:], cwd=work)


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """(ctapipe-apply-models output, flow ApplyModels output) for the same toy gamma events."""
    work = tmp_path_factory.mktemp("models")
    common = [f"read.n_events={N_EVENTS}", "read.seed=7"]
    gamma = flow_run("toy_particle_dl2.yaml", work / "gamma.h5", *common)
    proton = flow_run("toy_particle_dl2.yaml", work / "proton.h5", "read.particle=proton",
                      "read.obs_id=2", "read.seed=8", f"read.n_events={N_EVENTS}")
    models = [work / "energy.pkl", work / "classifier.pkl", work / "disp.pkl"]
    tool(work, "ctapipe-train-energy-regressor", "--input", gamma, "--output", models[0],
         "--config", CFG / "train_energy.yaml")
    tool(work, "ctapipe-train-particle-classifier", "--signal", gamma, "--background", proton,
         "--output", models[1], "--config", CFG / "train_classifier.yaml")
    tool(work, "ctapipe-train-disp-reconstructor", "--input", gamma, "--output", models[2],
         "--config", CFG / "train_disp.yaml")
    reference = work / "ctapipe_applied.h5"
    tool(work, "ctapipe-apply-models", "--input", gamma, "--output", reference,
         *[a for m in models for a in ("--reconstructor", m)])
    mine = flow_run("toy_apply_models.yaml", work / "flow_applied.h5", *common,
                    "apply.models=[" + ", ".join(str(m) for m in models) + "]")
    return reference, mine


@pytest.mark.parametrize("path", ["/dl2/event/subarray/energy/ExtraTreesRegressor",
                                  "/dl2/event/subarray/particle_type/ExtraTreesClassifier",
                                  "/dl2/event/subarray/geometry/disp"])
def test_apply_models_equals_ctapipe_apply_models(applied, path):
    from ctapipe.io import read_table

    reference, mine = applied
    a, b = read_table(reference, path), read_table(mine, path)
    # flow writes events in the order they finish (workers run in parallel, and a replaced worker's
    # events come later); ctapipe in input order: compare event by event
    a.sort(["obs_id", "event_id"])
    b.sort(["obs_id", "event_id"])
    assert sorted(a.colnames) == sorted(b.colnames) and len(a) == len(b) == N_EVENTS
    n_valid = 0
    for col in a.colnames:
        assert a[col].unit == b[col].unit, col
        x, y = np.asarray(a[col]), np.asarray(b[col])
        if x.dtype.kind == "f":
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=col)
        else:
            np.testing.assert_array_equal(y, x, err_msg=col)
        if col.endswith("_is_valid"):
            n_valid = int(x.sum())
    assert n_valid >= 20  # the comparison covers real predictions (31 of 150 toy gammas pass)


def test_missing_model_file_is_a_clear_error(tmp_path):
    ctx = ToyParticleSource(n_events=1).publish_context()
    step = ApplyModels(models=[str(tmp_path / "nope.pkl")], context=ctx)
    with pytest.raises(DataError, match="nope.pkl"):
        step.setup()
