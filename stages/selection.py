"""Event-level DL2 **toy estimates** for the demo: a simple energy, gamma-likeness cuts, and a
scikit-learn model.

For an analysis, train models with ctapipe's tools and apply them with `stages.models.ApplyModels`
(docs/analysis.md). `EnergyEstimate` and `GammaSelection` are placeholder formulas; the DL2 writer
stores them as ``ToyEnergyEstimate`` / ``ToyGammaSelection`` tables with a ``FLOW_ESTIMATE``
attribute saying so, and the run's provenance row lists them as toy estimates.

Contract: the pure functions take per-telescope arrays of one event and return floats.

- `impact_distances`: perpendicular distance (m) of each telescope to the reconstructed shower axis.
- `estimate_energy`: **approximate** lookup-free formula ``E_i = intensity_i / pe_per_tev *
  exp(impact_i / impact_scale_m)`` (a flat-ish light pool falling exponentially with distance),
  combined as the intensity-weighted geometric mean. It has to be calibrated per array and zenith
  (the defaults suit stages.io.toy); use `SklearnModel` for a real analysis.
- `gamma_score`: mean scaled width and length (``width / ref_width_deg``...) and a smooth
  gammaness ``1 / (1 + exp((msw - max_msw) / softness))``; ``is_gamma`` applies the hard cuts.

Steps: `EnergyEstimate` (``dl2["energy"]``, ``dl2["energy_valid"]``), `GammaSelection`
(``dl2["gammaness"]``, ``dl2["is_gamma"]``) and `SklearnModel` (any joblib-saved estimator on
per-telescope ``params`` columns, combined by intensity-weighted mean into ``dl2[output]``).
"""

from __future__ import annotations

import numpy as np

from flow.graph.params import Param
from flow.graph.step import Stager


def impact_distances(positions, core_x, core_y, alt_deg, az_deg):
    """Distance (m) of each ground position (n, 3) to the shower axis through (core_x, core_y, 0)."""
    alt, az = np.deg2rad(alt_deg), np.deg2rad(az_deg)
    axis = np.array([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)])
    offset = np.asarray(positions, np.float64) - np.array([core_x, core_y, 0.0])
    return np.linalg.norm(np.cross(offset, axis), axis=1)


def estimate_energy(intensity, impact, pe_per_tev=2000.0, impact_scale_m=180.0):
    """Approximate energy (TeV): intensity-weighted geometric mean of per-telescope estimates."""
    intensity, impact = np.asarray(intensity, np.float64), np.asarray(impact, np.float64)
    ok = (intensity > 0) & np.isfinite(impact)
    if not ok.any():
        return np.nan
    log_e = np.log(intensity[ok] / pe_per_tev) + impact[ok] / impact_scale_m
    return float(np.exp(np.average(log_e, weights=intensity[ok])))


def gamma_score(width, length, ref_width_deg=0.05, ref_length_deg=0.15, max_msw=1.5,
                softness=0.2):
    """(msw, msl, gammaness) from per-telescope widths and lengths (deg)."""
    width, length = np.asarray(width, np.float64), np.asarray(length, np.float64)
    ok = np.isfinite(width) & np.isfinite(length)
    if not ok.any():
        return np.nan, np.nan, np.nan
    msw, msl = np.mean(width[ok] / ref_width_deg), np.mean(length[ok] / ref_length_deg)
    return float(msw), float(msl), float(1.0 / (1.0 + np.exp((msw - max_msw) / softness)))


def _used_tels(event: dict) -> list:
    """Telescopes of the stereo fit (dl2["telescopes"]), else those marked use_for_stereo."""
    tels = event.get("tels", {})
    listed = event.get("dl2", {}).get("telescopes")
    if listed is not None and len(listed):
        return [int(t) for t in listed if int(t) in tels]
    return [t for t, d in tels.items() if d.get("use_for_stereo")]


class EnergyEstimate(Stager):
    """Toy estimate: approximate energy from intensities and impact distances (`estimate_energy`).

    A placeholder for the demo, written as ``ToyEnergyEstimate``; not a trained model.
    """

    pe_per_tev = Param(float, 2000.0, "p.e. per TeV near the core (calibrate per array)")
    impact_scale_m = Param(float, 180.0, "exponential fall-off of intensity with impact (m)")

    def process(self, event: dict) -> dict:
        dl2 = event.setdefault("dl2", {})
        dl2["energy"], dl2["energy_valid"] = np.nan, False
        dl2["energy_algorithm"] = "ToyEnergyEstimate"
        use = _used_tels(event)
        if not use or not dl2.get("is_valid"):
            return event
        positions = [self.context["subarray"]["tels"][t]["position"] for t in use]
        impact = impact_distances(positions, dl2["core_x"], dl2["core_y"], dl2["alt"], dl2["az"])
        intensity = [event["tels"][t]["params"]["hillas_intensity"] for t in use]
        dl2["energy"] = estimate_energy(intensity, impact, self.pe_per_tev, self.impact_scale_m)
        dl2["energy_valid"] = bool(np.isfinite(dl2["energy"]))
        return event


class GammaSelection(Stager):
    """Toy estimate: gammaness from mean scaled width/length; ``is_gamma`` from hard cuts.

    A placeholder for the demo, written as ``ToyGammaSelection``; not a trained classifier.
    """

    ref_width_deg = Param(float, 0.05, "typical gamma image width (deg)")
    ref_length_deg = Param(float, 0.15, "typical gamma image length (deg)")
    max_msw = Param(float, 1.5, "mean scaled width cut")
    max_msl = Param(float, 1.8, "mean scaled length cut")
    softness = Param(float, 0.2, "width of the gammaness transition in msw")
    min_intensity = Param(float, 50.0, "minimum summed intensity (p.e.) to accept")

    def process(self, event: dict) -> dict:
        dl2 = event.setdefault("dl2", {})
        use = _used_tels(event)
        params = [event["tels"][t]["params"] for t in use]
        msw, msl, gammaness = gamma_score([p["hillas_width"] for p in params],
                                          [p["hillas_length"] for p in params],
                                          self.ref_width_deg, self.ref_length_deg, self.max_msw,
                                          self.softness)
        intensity = sum(float(p["hillas_intensity"]) for p in params)
        dl2.update({"classification_algorithm": "ToyGammaSelection",
                    "mean_scaled_width": msw, "mean_scaled_length": msl, "gammaness": gammaness,
                    "is_gamma": bool(msw <= self.max_msw and msl <= self.max_msl
                                     and intensity >= self.min_intensity)})
        return event


class SklearnModel(Stager):
    """Applies a joblib-saved scikit-learn estimator per telescope; mean into ``dl2[output]``."""

    model = Param(str, None, "path of a joblib file; without it the step passes events through")
    features = Param(list, ["hillas_intensity", "hillas_length", "hillas_width",
                            "hillas_skewness", "hillas_kurtosis", "leakage_intensity_width_2"],
                     "params columns fed to the model, in order")
    output = Param(str, "gammaness", "dl2 key to write")
    method = Param(str, "predict_proba", "predict_proba (column 1) or predict",
                   choices=("predict_proba", "predict"))
    log10_target = Param(bool, False, "the model predicts log10 of the output (energy)")

    def setup(self) -> None:
        self._model = None
        if self.model:
            import joblib

            self._model = joblib.load(self.model)

    def process(self, event: dict) -> dict:
        if self._model is None:
            return event
        dl2 = event.setdefault("dl2", {})
        use = [t for t in _used_tels(event) if "params" in event["tels"][t]]
        rows = np.array([[event["tels"][t]["params"].get(f, np.nan) for f in self.features]
                         for t in use], dtype=np.float64).reshape(len(use), len(self.features))
        ok = np.isfinite(rows).all(axis=1)
        dl2[self.output] = np.nan
        if ok.any():
            if self.method == "predict_proba":
                values = self._model.predict_proba(rows[ok])[:, 1]
            else:
                values = self._model.predict(rows[ok])
            values = 10.0**values if self.log10_target else values
            weights = np.array([event["tels"][t]["params"]["hillas_intensity"] for t in use])[ok]
            dl2[self.output] = float(np.average(values, weights=np.clip(weights, 1e-9, None)))
        return event
