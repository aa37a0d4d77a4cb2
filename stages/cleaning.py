"""Image cleaning: all cleaning functions return a boolean mask of the pixels to keep.

`tailcuts_clean` is ctapipe's two-threshold picture/boundary cleaning on a CSR neighbour relation
(``indptr``, ``indices``: ``geometry.neighbor_matrix_sparse``), with the same semantics:

- picture pixels: ``image >= picture_thresh`` and, unless ``keep_isolated_pixels`` or
  ``min_number_picture_neighbors == 0``, at least that many picture-threshold neighbours;
- kept: boundary pixels (``image >= boundary_thresh``) next to a picture pixel, plus picture pixels
  that have a boundary neighbour (or all picture pixels if ``keep_isolated_pixels``).

`TailcutsCleaning` is the step (ctapipe-process defaults: 10 / 5 p.e., 2 neighbours, isolated pixels
dropped); per-camera thresholds are set with ``per_camera`` like ctapipe's telescope parameters.
"""

from __future__ import annotations

from fnmatch import fnmatch

import numpy as np
from numba import njit

from flow.graph.params import Param
from flow.graph.step import Stager

THRESHOLD_KEYS = ("picture_thresh", "boundary_thresh", "keep_isolated_pixels",
                  "min_number_picture_neighbors")


@njit(cache=True)
def tailcuts_clean(image, indptr, indices, picture_thresh=10.0, boundary_thresh=5.0,
                   keep_isolated_pixels=False, min_number_picture_neighbors=2):
    """Boolean mask of the pixels surviving picture/boundary cleaning (ctapipe semantics)."""
    n_pix = image.shape[0]
    above_picture = image >= picture_thresh
    above_boundary = image >= boundary_thresh
    in_picture = above_picture.copy()
    if not keep_isolated_pixels and min_number_picture_neighbors > 0:
        for pix in range(n_pix):
            if above_picture[pix]:
                count = 0
                for k in range(indptr[pix], indptr[pix + 1]):
                    count += above_picture[indices[k]]
                in_picture[pix] = count >= min_number_picture_neighbors
    mask = np.zeros(n_pix, dtype=np.bool_)
    for pix in range(n_pix):
        if not (above_boundary[pix] or in_picture[pix]):
            continue
        picture_neighbor = False
        boundary_neighbor = False
        for k in range(indptr[pix], indptr[pix + 1]):
            picture_neighbor |= in_picture[indices[k]]
            boundary_neighbor |= above_boundary[indices[k]]
        if keep_isolated_pixels:
            mask[pix] = in_picture[pix] or (above_boundary[pix] and picture_neighbor)
        else:
            mask[pix] = (above_boundary[pix] and picture_neighbor) or (
                in_picture[pix] and boundary_neighbor)
    return mask


def thresholds_for(tel_id: int, tel: dict, defaults: dict, per_camera: dict) -> dict:
    """Effective thresholds of one telescope: ``defaults`` updated by the first matching rule.

    ``per_camera`` maps a pattern to overrides; a pattern matches (fnmatch) the camera name, the
    optics name, ``"<optics>_<camera>"`` or ``"id:<tel_id>"``, e.g.
    ``{"LSTCam": {"picture_thresh": 8, "boundary_thresh": 4}, "id:5": {...}}``.
    """
    camera, optics = tel["camera"].get("name", ""), tel.get("optics", {}).get("name", "")
    names = (camera, optics, f"{optics}_{camera}", f"id:{tel_id}")
    out = dict(defaults)
    for pattern, overrides in per_camera.items():
        if any(fnmatch(name, str(pattern)) for name in names):
            unknown = set(overrides) - set(THRESHOLD_KEYS)
            if unknown:
                raise ValueError(f"per_camera[{pattern!r}]: unknown keys {sorted(unknown)}, "
                                 f"expected some of {THRESHOLD_KEYS}")
            out.update(overrides)
            break
    return out


class TailcutsCleaning(Stager):
    """``image`` -> ``mask`` per telescope (ctapipe's TailcutsImageCleaner)."""

    picture_thresh = Param(float, 10.0, "picture threshold (p.e.)")
    boundary_thresh = Param(float, 5.0, "boundary threshold (p.e.)")
    min_number_picture_neighbors = Param(int, 2, "picture pixels need this many picture neighbours")
    keep_isolated_pixels = Param(bool, False, "keep picture pixels without boundary neighbours")
    per_camera = Param(dict, {}, "pattern -> threshold overrides, e.g. {LSTCam: {picture_thresh: 8}}")

    def setup(self) -> None:
        self._thresholds: dict = {}
        tailcuts_clean(np.zeros(2, np.float32), np.array([0, 1, 2], np.int32),
                       np.array([1, 0], np.int32), 10.0, 5.0, False, 2)

    def thresholds(self, tel_id: int) -> dict:
        if tel_id not in self._thresholds:
            defaults = {key: getattr(self, key) for key in THRESHOLD_KEYS}
            tel = self.context["subarray"]["tels"][tel_id]
            self._thresholds[tel_id] = thresholds_for(tel_id, tel, defaults, self.per_camera or {})
        return self._thresholds[tel_id]

    def process(self, event: dict) -> dict:
        for tel_id, data in event.get("tels", {}).items():
            if "image" not in data:
                continue
            camera = self.context["subarray"]["tels"][tel_id]["camera"]
            cut = self.thresholds(tel_id)
            data["mask"] = tailcuts_clean(
                np.asarray(data["image"]), camera["neighbors_indptr"], camera["neighbors_indices"],
                float(cut["picture_thresh"]), float(cut["boundary_thresh"]),
                bool(cut["keep_isolated_pixels"]), int(cut["min_number_picture_neighbors"]))
        return event
