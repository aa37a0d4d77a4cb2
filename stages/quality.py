"""Quality cuts on images and image parameters, and the counts ctapipe's QualityQuery keeps of them.

Contract: `stereo_criteria` takes a flat parameter dict (ctapipe DL1 column names) and returns one
bool per criterion of `stereo_query`; `passes_stereo_quality` is their ``all``. The defaults are
ctapipe 0.28's StereoQualityQuery used by its HillasReconstructor: ``hillas_intensity > 50``,
``hillas_width > 0``, ``morphology_n_pixels > 3``. Optional extra cuts on leakage and the distance of
the image centroid (hillas_r) are off by default. NaN never passes. `image_criteria` is ctapipe's
ImageQualityQuery (cleaned intensity > 0, at least 2 pixels), applied in stages.image, which gives
NaN parameters to images failing it, so they fail the stereo cuts too.

`query_counts` turns the results of one event (one row per telescope image) into the record
``QualityQuery.to_table(functions=True)`` holds: criteria names and expressions (with ``TOTAL``
first), counts of each criterion and cumulative counts of the criteria applied in order. Steps put
it under ``event["quality_counts"][<query>]`` (``"image"``: stages.image; ``"stereo"``: QualityCuts);
writers add them up (`add_counts`) and write ctapipe's service tables at the end of the stream.

`QualityCuts` is the step: it writes ``tels[tid]["use_for_stereo"]`` and the stereo counts.
"""

from __future__ import annotations

import math

import numpy as np

from flow.graph.params import Param
from flow.graph.step import Stager

#: ctapipe's ImageQualityQuery defaults: (name, expression) on the cleaned pixels' image
IMAGE_QUERY = (("size_greater_0", "image.sum() > 0"), ("at_least_2_pixels", "image.size > 1"))


def image_criteria(image, mask) -> tuple[bool, bool]:
    """ImageQualityQuery's results for the pixels of ``image`` selected by ``mask``."""
    selected = np.asarray(image)[np.asarray(mask, dtype=bool)]
    return bool(selected.sum() > 0), bool(selected.size > 1)


def stereo_query(min_intensity: float = 50.0, min_width: float = 0.0, min_pixels: int = 3,
                 max_leakage_intensity_2: float | None = None,
                 max_r_deg: float | None = None) -> tuple[tuple[str, str], ...]:
    """(name, expression) of each stereo criterion, as ctapipe's StereoQualityQuery writes them."""
    query = [(f"> {min_intensity:g} phe", f"parameters.hillas.intensity > {min_intensity:g}"),
             ("Positive width" if min_width == 0 else f"width > {min_width:g} deg",
              f"parameters.hillas.width.value > {min_width:g}"),
             (f"> {min_pixels} pixels", f"parameters.morphology.n_pixels > {min_pixels}")]
    if max_leakage_intensity_2 is not None:
        query.append((f"leakage <= {max_leakage_intensity_2:g}",
                      f"parameters.leakage.intensity_width_2 <= {max_leakage_intensity_2:g}"))
    if max_r_deg is not None:
        query.append((f"r <= {max_r_deg:g} deg", f"parameters.hillas.r.value <= {max_r_deg:g}"))
    return tuple(query)


def stereo_criteria(params: dict, min_intensity: float = 50.0, min_width: float = 0.0,
                    min_pixels: int = 3, max_leakage_intensity_2: float | None = None,
                    max_r_deg: float | None = None) -> tuple[bool, ...]:
    """One bool per `stereo_query` criterion (strict ``>`` for the minima, ``<=`` for the maxima)."""

    def value(key: str) -> float:
        v = params.get(key, math.nan)
        return math.nan if v is None else float(v)

    out = [value("hillas_intensity") > min_intensity, value("hillas_width") > min_width,
           value("morphology_n_pixels") > min_pixels]
    if max_leakage_intensity_2 is not None:
        out.append(value("leakage_intensity_width_2") <= max_leakage_intensity_2)
    if max_r_deg is not None:
        out.append(value("hillas_r") <= max_r_deg)
    return tuple(bool(v) for v in out)


def passes_stereo_quality(params: dict, **cuts) -> bool:
    """True if the image passes every stereo cut (see `stereo_criteria`)."""
    return all(stereo_criteria(params, **cuts))


def query_counts(query, results) -> dict:
    """``QualityQuery.to_table(functions=True)`` of ``results`` (one row of bools per item)."""
    passed = np.ones((len(results), len(query) + 1), dtype=bool)
    if len(results):
        passed[:, 1:] = np.asarray(results, dtype=bool).reshape(len(results), len(query))
    return {"criteria": ["TOTAL", *(name for name, _ in query)],
            "func": ["True", *(expr for _, expr in query)],
            "counts": passed.sum(axis=0).tolist(),
            "cumulative_counts": np.cumprod(passed, axis=1).sum(axis=0).tolist()}


def add_counts(total: dict | None, counts: dict) -> dict:
    """The sum of two `query_counts` records of the same query (``total`` None: a copy)."""
    if total is None:
        return {key: list(value) for key, value in counts.items()}
    if list(total["criteria"]) != list(counts["criteria"]):
        raise ValueError(f"quality criteria changed within a stream: {total['criteria']} "
                         f"then {counts['criteria']}")
    for key in ("counts", "cumulative_counts"):
        total[key] = [a + b for a, b in zip(total[key], counts[key], strict=True)]
    return total


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
        results = []
        for _, data in sorted(tels.items()):
            results.append(stereo_criteria(data.get("params", {}), **cuts))
            data["use_for_stereo"] = all(results[-1])
        event.setdefault("quality_counts", {})["stereo"] = query_counts(stereo_query(**cuts),
                                                                        results)
        if self.drop_failed:
            event["tels"] = {t: d for t, d in tels.items() if d["use_for_stereo"]}
        return event
