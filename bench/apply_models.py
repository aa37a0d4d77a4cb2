"""ApplyModels (stages.models) against ctapipe-apply-models on the same DL2 events, same run.

    .venv/bin/python bench/apply_models.py [--events 300] [--repeats 3]

Once (not timed): flow writes toy gamma and proton DL2 (configs/toy_particle_dl2.yaml), ctapipe's
train tools fit an energy regressor and a particle classifier on them (configs/ctapipe/), and the
events that reach the writer are collected in memory. Then, interleaved per repeat:

- **ctapipe**: ``ctapipe-apply-models`` on the gamma DL2 file, wall time of the process (start-up,
  model loading, reading, predicting, writing), as a user runs it;
- **flow_total**: ``ApplyModels`` setup (model loading) plus ``process`` of every event, in this
  process;
- **flow_steady**: ``process`` only (a worker's steady state: models are loaded once per worker).

Prints array events/s of each and the ratios flow/ctapipe (medians over repeats); the last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def sh(*args, cwd=None) -> None:
    """Run a command in ``cwd`` (ctapipe tools leave their provenance log there)."""
    subprocess.run([str(a) for a in args], check=True, cwd=cwd or ROOT, capture_output=True)


def prepare(work: Path, n_events: int):
    """(gamma DL2 path, [model paths], events reaching the writer, context)."""
    from flow.graph.loader import load_graph
    from flow.graph.overrides import apply_overrides
    from flow.testing import collect

    config = ROOT / "configs" / "toy_particle_dl2.yaml"
    files = {}
    for particle, obs_id in (("gamma", 1), ("proton", 2)):
        files[particle] = work / f"{particle}.h5"
        sh(sys.executable, "-m", "flow.cli", "run", config, "--quiet", "--set",
           f"read.particle={particle}", "--set", f"read.obs_id={obs_id}", "--set",
           f"read.n_events={n_events}", "--set", f"write.path={files[particle]}",
           "--dead-letter", work / "deadletter.jsonl")
    models = [work / "energy.pkl", work / "classifier.pkl"]
    sh(BIN / "ctapipe-train-energy-regressor", "--input", files["gamma"], "--output", models[0],
       "--config", ROOT / "configs/ctapipe/train_energy.yaml", cwd=work)
    sh(BIN / "ctapipe-train-particle-classifier", "--signal", files["gamma"], "--background",
       files["proton"], "--output", models[1], "--config", ROOT / "configs/ctapipe/train_classifier.yaml",
       cwd=work)
    errors: list = []
    graph = apply_overrides(load_graph(config), [f"read.n_events={n_events}"], errors)
    assert not errors, errors
    from stages.io.toy_particles import ToyParticleSource

    context = ToyParticleSource(n_events=n_events).publish_context()
    got = collect(graph, context=context)
    return files["gamma"], models, [ev for _, ev in got["write"]], context


def time_ctapipe(dl2: Path, models: list, out: Path) -> float:
    start = time.perf_counter()
    sh(BIN / "ctapipe-apply-models", "--input", dl2, "--output", out, "--overwrite",
       *[a for m in models for a in ("--reconstructor", m)], cwd=out.parent)
    return time.perf_counter() - start


def time_flow(models: list, events: list, context: dict) -> tuple[float, float]:
    import copy

    from stages.models import ApplyModels

    events = copy.deepcopy(events)
    start = time.perf_counter()
    step = ApplyModels(models=[str(m) for m in models], context=context)
    step.setup()
    loaded = time.perf_counter()
    for event in events:
        step.process(event)
    end = time.perf_counter()
    return end - start, end - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dl2, models, events, context = prepare(work, args.events)
        n = len(events)
        rows = []
        for _ in range(args.repeats):
            t_ct = time_ctapipe(dl2, models, work / "applied.h5")
            t_total, t_steady = time_flow(models, events, context)
            rows.append({"ctapipe": n / t_ct, "flow_total": n / t_total, "flow_steady": n / t_steady})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"{n} array events, {args.repeats} interleaved repeats (medians, array events/s)")
    for key, value in med.items():
        print(f"  {key:12s} {value:10.1f}")
    ratios = {"ratio_total": statistics.median(r["flow_total"] / r["ctapipe"] for r in rows),
              "ratio_steady": statistics.median(r["flow_steady"] / r["ctapipe"] for r in rows)}
    print(f"  ApplyModels / ctapipe-apply-models: {ratios['ratio_total']:.2f} (with model loading),"
          f" {ratios['ratio_steady']:.2f} (steady state)")
    print(json.dumps({"n_events": n, **med, **ratios}))


if __name__ == "__main__":
    main()
