"""stages.selection: approximate energy, gamma-likeness cuts and the scikit-learn model step."""

import numpy as np
import pytest

from stages.selection import (
    EnergyEstimate,
    GammaSelection,
    SklearnModel,
    estimate_energy,
    gamma_score,
    impact_distances,
)


def test_impact_distance_is_perpendicular_to_the_axis():
    positions = np.array([[100.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    np.testing.assert_allclose(impact_distances(positions, 0.0, 0.0, 90.0, 0.0), [100.0, 50.0])
    # axis tilted towards north (az 0): a telescope north of the core is closer to the axis
    d = impact_distances(positions, 0.0, 0.0, 60.0, 0.0)
    np.testing.assert_allclose(d[0], 100.0 * np.sin(np.deg2rad(60.0)))


def test_energy_formula_inverts_the_toy_light_model():
    energy, impact = 3.0, np.array([50.0, 150.0, 300.0])
    intensity = 2000.0 * energy * np.exp(-impact / 180.0)
    assert estimate_energy(intensity, impact) == pytest.approx(energy)
    assert np.isnan(estimate_energy([0.0], [10.0]))


def test_gamma_score_orders_narrow_and_wide_images():
    _, _, narrow = gamma_score([0.04, 0.05], [0.12, 0.15])
    _, _, wide = gamma_score([0.15, 0.2], [0.4, 0.5])
    assert narrow > 0.9 and wide < 0.01
    assert np.isnan(gamma_score([np.nan], [np.nan])[2])


def event_with(widths, lengths, intensity=500.0):
    tels = {i + 1: {"use_for_stereo": True,
                    "params": {"hillas_width": w, "hillas_length": l_, "hillas_intensity": intensity,
                               "hillas_skewness": 0.1, "hillas_kurtosis": 2.0,
                               "leakage_intensity_width_2": 0.0}}
            for i, (w, l_) in enumerate(zip(widths, lengths, strict=True))}
    return {"tels": tels, "dl2": {"is_valid": True, "core_x": 0.0, "core_y": 0.0, "alt": 90.0,
                                  "az": 0.0, "telescopes": np.array(list(tels))}}


def test_selection_and_energy_steps():
    context = {"subarray": {"tels": {1: {"position": np.array([100.0, 0, 0])},
                                     2: {"position": np.array([0, 100.0, 0])}}}}
    gamma = GammaSelection().process(event_with([0.05, 0.06], [0.15, 0.2]))
    hadron = GammaSelection().process(event_with([0.2, 0.25], [0.5, 0.6]))
    assert gamma["dl2"]["is_gamma"] and not hadron["dl2"]["is_gamma"]
    assert gamma["dl2"]["gammaness"] > hadron["dl2"]["gammaness"]
    out = EnergyEstimate(context=context).process(event_with([0.05, 0.05], [0.1, 0.1], 1000.0))
    assert out["dl2"]["energy_valid"]
    assert out["dl2"]["energy"] == pytest.approx(0.5 * np.exp(100.0 / 180.0))


def test_sklearn_model_step_applies_a_trained_model(tmp_path):
    joblib = pytest.importorskip("joblib")
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    n = 400
    is_gamma = rng.random(n) < 0.5
    width = np.where(is_gamma, rng.normal(0.05, 0.01, n), rng.normal(0.15, 0.03, n))
    length = np.where(is_gamma, rng.normal(0.15, 0.03, n), rng.normal(0.35, 0.08, n))
    X = np.column_stack([np.full(n, 500.0), length, width, np.zeros(n), np.zeros(n), np.zeros(n)])
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, is_gamma)
    path = tmp_path / "gh.joblib"
    joblib.dump(model, path)

    step = SklearnModel(model=str(path))
    step.setup()
    event = event_with([0.05, 0.16], [0.15, 0.4])
    out = step.process(event)
    rows = np.array([[500.0, 0.15, 0.05, 0.1, 2.0, 0.0], [500.0, 0.4, 0.16, 0.1, 2.0, 0.0]])
    expected = model.predict_proba(rows)[:, 1].mean()
    assert out["dl2"]["gammaness"] == pytest.approx(expected)

    passthrough = SklearnModel()
    passthrough.setup()
    assert "gammaness" not in passthrough.process(event_with([0.05], [0.1]))["dl2"]
