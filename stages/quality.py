"""Quality cuts on image parameters: which telescope images may enter stereo reconstruction.

Contract: `passes_stereo_quality` takes a flat parameter dict (ctapipe DL1 column names) and returns
a bool. The defaults are ctapipe 0.28's StereoQualityQuery used by its HillasReconstructor:
``hillas_intensity > 50``, ``hillas_width > 0``, ``morphology_n_pixels > 3``. (The image-level
ImageQualityQuery — cleaned intensity > 0 and at least 2 pixels — is applied in stages.image, which
gives NaN parameters to images failing it, so they fail here too.) Optional extra cuts on leakage
and the distance of the image centroid (hillas_r) are off by default. NaN never passes.

`QualityCuts` is the step: it writes ``tels[tid]["use_for_stereo"]``.
"""

from __future__ import annotations

import math

from flow.graph.params import Param
from flow.graph.step import Stager


def passes_stereo_quality(params: dict, min_intensity: float = 50.0, min_width: float = 0.0,
                          min_pixels: int = 3, max_leakage_intensity_2: float | None = None,
                          max_r_deg: float | None = None) -> bool:
    """True if the image passes every cut (strict ``>`` for the minima, ``<=`` for the maxima)."""

    def value(key: str) -> float:
        v = params.get(key, math.nan)
        return math.nan if v is None else float(v)

    ok = (value("hillas_intensity") > min_intensity and value("hillas_width") > min_width
          and value("morphology_n_pixels") > min_pixels)
    if ok and max_leakage_intensity_2 is not None:
        ok = value("leakage_intensity_width_2") <= max_leakage_intensity_2
    if ok and max_r_deg is not None:
        ok = value("hillas_r") <= max_r_deg
    return bool(ok)


class QualityCuts(Stager):
    """Marks each telescope image ``use_for_stereo`` (ctapipe StereoQualityQuery defaults)."""

    min_intensity = Param(float, 50.0, "hillas_intensity must be above this (p.e.)")
    min_width = Param(float, 0.0, "hillas_width must be above this (deg)")
    min_pixels = Param(int, 3, "morphology_n_pixels must be above this")
    max_leakage_intensity_2 = Param(float, None, "optional: max leakage_intensity_width_2")
    max_r_deg = Param(float, None, "optional: max hillas_r (deg)")
    drop_failed = Param(bool, False, "remove telescopes failing the cuts from the event")

    def cuts(self) -> dict:
        return {"min_intensity": self.min_intensity, "min_width": self.min_width,
                "min_pixels": self.min_pixels,
                "max_leakage_intensity_2": self.max_leakage_intensity_2,
                "max_r_deg": self.max_r_deg}

    def process(self, event: dict) -> dict:
        cuts = self.cuts()
        tels = event.get("tels", {})
        for data in tels.values():
            data["use_for_stereo"] = passes_stereo_quality(data.get("params", {}), **cuts)
        if self.drop_failed:
            event["tels"] = {t: d for t, d in tels.items() if d["use_for_stereo"]}
        return event
