"""Image parameters of a cleaned image: ctapipe's DL1 parameter set, without astropy.

Contract: `image_parameters` takes one telescope's full-camera arrays — ``image``, ``peak_time``,
``mask`` (cleaning) and a `CameraFrameGeometry` — and returns a flat dict keyed by ctapipe's DL1
column names (``hillas_*``, ``leakage_*``, ``concentration_*``, ``timing_*``, ``morphology_*``,
``intensity_*``, ``peak_time_*``; angles in deg, in the telescope frame). An image that fails
ctapipe's ImageQualityQuery (cleaned intensity > 0, at least 2 pixels) gets ctapipe's defaults
(NaN, and -1 for morphology counts). The kernels (`leakage_kernel`, `island_labels`,
`lts_timing`, `describe`) are numba functions on plain arrays.

Timing uses ctapipe's least-trimmed-squares fit (5 random starts, 85 % of the points) with a
generator reset to seed 0 for every image, so a result depends on the image only, not on the order
in which a worker saw the events (ctapipe shares one generator across all images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from flow.params import Param
from flow.step import Stager

from .hillas import (
    CONCENTRATION_FIELDS,
    FOV_LAT,
    FOV_LON,
    HILLAS_FIELDS,
    PSI,
    concentration_kernel,
    hillas_kernel,
    pixel_width,
    telescope_frame,
)

LEAKAGE_FIELDS = ("leakage_pixels_width_1", "leakage_pixels_width_2",
                  "leakage_intensity_width_1", "leakage_intensity_width_2")
TIMING_FIELDS = ("timing_slope", "timing_intercept", "timing_deviation")
MORPHOLOGY_FIELDS = ("morphology_n_pixels", "morphology_n_islands", "morphology_n_small_islands",
                     "morphology_n_medium_islands", "morphology_n_large_islands")
STAT_NAMES = ("max", "min", "mean", "std", "skewness", "kurtosis")
FIELDS = (HILLAS_FIELDS + TIMING_FIELDS + LEAKAGE_FIELDS + CONCENTRATION_FIELDS
          + MORPHOLOGY_FIELDS + tuple(f"intensity_{s}" for s in STAT_NAMES)
          + tuple(f"peak_time_{s}" for s in STAT_NAMES))
LTS_SEED = 0


@dataclass(frozen=True)
class CameraFrameGeometry:
    """Per-telescope constants: telescope-frame pixel positions (deg), areas, widths, CSR, borders."""

    x: np.ndarray
    y: np.ndarray
    area: np.ndarray
    width: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    border1: np.ndarray
    border2: np.ndarray

    @classmethod
    def from_camera(cls, camera: dict, focal_length: float) -> CameraFrameGeometry:
        x, y, area = telescope_frame(camera["pix_x"], camera["pix_y"], camera["pix_area"],
                                     focal_length, camera.get("cam_rotation_deg", 0.0))
        area = np.broadcast_to(area, x.shape).astype(np.float64)
        indptr = np.asarray(camera["neighbors_indptr"], np.int64)
        indices = np.asarray(camera["neighbors_indices"], np.int64)
        border1, border2 = border_masks(indptr, indices)
        return cls(x, y, area, pixel_width(area, camera["pix_type"]), indptr, indices,
                   border1, border2)


def border_masks(indptr, indices):
    """ctapipe's border pixels of width 1 (fewer neighbours than the most) and 2 (next to one)."""
    n_neighbors = np.diff(indptr)
    border1 = n_neighbors < n_neighbors.max()
    owner = np.repeat(np.arange(len(n_neighbors)), n_neighbors)
    border2 = np.zeros_like(border1)
    border2[owner[border1[indices]]] = True
    return border1, border2


@njit(cache=True)
def leakage_kernel(image, mask, border1, border2):
    """Fractions of cleaned pixels / intensity in the 1- and 2-pixel-wide camera border."""
    n, n1, n2, total, i1, i2 = 0, 0, 0, 0.0, 0.0, 0.0
    for pix in range(len(image)):
        if mask[pix]:
            n += 1
            total += image[pix]
            if border1[pix]:
                n1 += 1
                i1 += image[pix]
            if border2[pix]:
                n2 += 1
                i2 += image[pix]
    return np.array([n1 / n, n2 / n, i1 / total, i2 / total])


@njit(cache=True)
def island_labels(mask, indptr, indices):
    """(n_islands, labels): connected components of ``mask`` (labels 1..n, 0 outside)."""
    labels = np.zeros(len(mask), dtype=np.int32)
    stack = np.empty(len(mask), dtype=np.int64)
    n_islands = 0
    for seed in range(len(mask)):
        if not mask[seed] or labels[seed]:
            continue
        n_islands += 1
        labels[seed], stack[0], top = n_islands, seed, 1
        while top:
            top -= 1
            pix = stack[top]
            for k in range(indptr[pix], indptr[pix + 1]):
                neighbor = indices[k]
                if mask[neighbor] and not labels[neighbor]:
                    labels[neighbor] = n_islands
                    stack[top] = neighbor
                    top += 1
    return n_islands, labels


@njit(cache=True)
def morphology_kernel(mask, indptr, indices):
    """n_pixels, n_islands and islands with <= 2, 3..50 and > 50 pixels."""
    n_islands, labels = island_labels(mask, indptr, indices)
    sizes = np.bincount(labels, minlength=n_islands + 1)[1:]
    small, large = (sizes <= 2).sum(), (sizes > 50).sum()
    return np.array([mask.sum(), n_islands, small, n_islands - small - large, large])


@njit(cache=True)
def _fit_line_fast(x, y, idx):
    """Closed-form least squares (slope, intercept, rss) on points ``idx``; NaN if degenerate."""
    sx, sy, sxx, sxy, n = 0.0, 0.0, 0.0, 0.0, len(idx)
    for i in idx:
        sx += x[i]
        sy += y[i]
        sxx += x[i] * x[i]
        sxy += x[i] * y[i]
    det = sxx * n - sx * sx
    if det < 2 * np.finfo(np.float64).eps:
        return np.nan, np.nan, np.nan
    slope, intercept = (n * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det
    rss = 0.0
    for i in idx:
        rss += (y[i] - (x[i] * slope + intercept)) ** 2
    return slope, intercept, rss


@njit(cache=True)
def _fit(exact, design, x, y, idx):
    if exact:
        return _fit_line(design, y, idx)
    return _fit_line_fast(x, y, idx)


@njit(cache=True)
def _fit_line(design, y, idx):
    """Least squares (slope, intercept, rss) on rows ``idx``; NaN if det(XᵀX) < 2 eps.

    Written with the same matrix operations as ctapipe.fitting.linear_regression on purpose: with
    3 points the LTS refits pairs, the residual sums are pure rounding noise, and the LTS picks
    its best start by them; only bit-identical arithmetic reproduces ctapipe's choice. With more
    points `_fit_line_fast` (closed form, ~10x faster) agrees to rounding.
    """
    X, yy = design[idx], y[idx]
    mat = X.T @ X
    if np.linalg.det(mat) < 2 * np.finfo(np.float64).eps:
        return np.nan, np.nan, np.nan
    beta = np.linalg.inv(mat) @ X.T @ yy
    rss = np.sum((yy - (X[:, 0] * beta[0] + beta[1])) ** 2)
    return beta[0], beta[1], rss


@njit(cache=True)
def lts_timing(longi, peak_time, rng, samples=5, fraction=0.85, max_iterations=20, eps=1e-12):
    """ctapipe's LTS line fit of peak_time vs longitudinal position: (slope, intercept, rmse)."""
    keep = np.isfinite(longi) & np.isfinite(peak_time)
    x, y = longi[keep], peak_time[keep]
    n = len(x)
    if n < 2:
        return np.array([np.nan, np.nan, np.nan])
    size = np.int64(fraction * n)
    exact = n <= 3
    design = np.empty((n, 2), dtype=np.float64)
    design[:, 0] = x
    design[:, 1] = 1.0
    best_slope, best_intercept, best_error = np.nan, np.nan, np.inf
    pair = np.empty(2, dtype=np.int64)
    for _ in range(samples):
        pair[0] = rng.integers(0, n)
        pair[1] = rng.integers(0, n - 1)
        if pair[1] >= pair[0]:
            pair[1] += 1
        slope, intercept, error = _fit(exact, design, x, y, pair)
        if np.isnan(slope):
            continue
        for _ in range(max_iterations):
            subset = np.argsort((y - (x * slope + intercept)) ** 2)[:size]
            slope, intercept, new_error = _fit(exact, design, x, y, subset)
            converged = abs(error - new_error) < eps
            error = new_error
            if converged or np.isnan(slope):
                break
        if error < best_error:
            best_slope, best_intercept, best_error = slope, intercept, error
    deviation = np.sqrt(np.mean((longi * best_slope + best_intercept - peak_time) ** 2))
    return np.array([best_slope, best_intercept, deviation])


@njit(cache=True)
def describe(values):
    """max, min, mean, std, skewness, kurtosis (Fisher) as ctapipe's descriptive_statistics."""
    mean = values.mean()
    std = np.sqrt(((values - mean) ** 2).mean())
    z = (values - mean) / std
    return np.array([values.max(), values.min(), mean, std, (z**3).mean(), (z**4).mean() - 3.0])


def default_parameters() -> dict:
    """ctapipe's parameters of an image that cannot be parametrised (NaN, -1 counts)."""
    out = dict.fromkeys(FIELDS, np.nan)
    out.update(dict.fromkeys(MORPHOLOGY_FIELDS, -1))
    return out


def image_parameters(image, peak_time, mask, geom: CameraFrameGeometry, rng=None) -> dict:
    """All DL1 parameters of one cleaned image (see module docstring); ``rng`` for the LTS fit."""
    mask = np.asarray(mask, dtype=np.bool_)
    selected = np.asarray(image)[mask]
    if not (selected.sum() > 0 and selected.size > 1):
        return default_parameters()
    w = selected.astype(np.float64)
    x, y = geom.x[mask], geom.y[mask]
    hillas = hillas_kernel(x, y, geom.area[mask], w)
    out = dict(zip(HILLAS_FIELDS, hillas.tolist(), strict=True))
    out.update(zip(LEAKAGE_FIELDS, leakage_kernel(image, mask, geom.border1, geom.border2).tolist(),
                   strict=True))
    out.update(zip(CONCENTRATION_FIELDS,
                   concentration_kernel(x, y, w, geom.width[mask], hillas).tolist(), strict=True))
    counts = morphology_kernel(mask, geom.indptr, geom.indices).tolist()
    out.update(zip(MORPHOLOGY_FIELDS, counts, strict=True))
    out.update(zip((f"intensity_{s}" for s in STAT_NAMES), describe(w).tolist(), strict=True))
    if peak_time is None:
        out.update(dict.fromkeys(TIMING_FIELDS + tuple(f"peak_time_{s}" for s in STAT_NAMES),
                                 np.nan))
        return out
    times = np.asarray(peak_time)[mask].astype(np.float64)
    psi = np.deg2rad(hillas[PSI])
    longi = (x - hillas[FOV_LON]) * np.cos(psi) + (y - hillas[FOV_LAT]) * np.sin(psi)
    rng = np.random.default_rng(LTS_SEED) if rng is None else rng
    out.update(zip(TIMING_FIELDS, lts_timing(longi, times, rng).tolist(), strict=True))
    out.update(zip((f"peak_time_{s}" for s in STAT_NAMES), describe(times).tolist(), strict=True))
    return out


class ImageParameters(Stager):
    """``image``, ``peak_time``, ``mask`` -> ``params`` (flat, ctapipe DL1 column names)."""

    focal_length_choice = Param(str, "equivalent", "focal length for the telescope frame",
                                choices=("equivalent", "effective"))

    def setup(self) -> None:
        self._geometries: dict = {}
        self._rng = np.random.default_rng(LTS_SEED)
        self._rng_state = self._rng.bit_generator.state
        camera = {"pix_x": np.array([0.0, 0.1, 0.2]), "pix_y": np.array([0.0, 0.05, 0.0]),
                  "pix_area": np.full(3, 0.01), "pix_type": "hexagon",
                  "neighbors_indptr": np.array([0, 1, 3, 4]),
                  "neighbors_indices": np.array([1, 0, 2, 1])}
        geom = CameraFrameGeometry.from_camera(camera, 10.0)
        image_parameters(np.array([10.0, 20.0, 5.0], np.float32), np.array([1.0, 2.0, 3.0],
                         np.float32), np.ones(3, bool), geom, self._rng)

    def geometry(self, tel_id: int) -> CameraFrameGeometry:
        if tel_id not in self._geometries:
            tel = self.context["subarray"]["tels"][tel_id]
            focal = tel["optics"][f"{self.focal_length_choice}_focal_length"]
            self._geometries[tel_id] = CameraFrameGeometry.from_camera(tel["camera"], focal)
        return self._geometries[tel_id]

    def process(self, event: dict) -> dict:
        for tel_id, data in event.get("tels", {}).items():
            if "mask" not in data:
                continue
            self._rng.bit_generator.state = self._rng_state
            data["params"] = {**data.get("params", {}), **image_parameters(
                data["image"], data.get("peak_time"), data["mask"], self.geometry(tel_id),
                self._rng)}
        return event
