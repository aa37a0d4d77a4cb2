"""Image parameters of a cleaned image: ctapipe's DL1 parameter set, without astropy.

Contract: `image_parameters` takes one telescope's full-camera arrays — ``image``, ``peak_time``,
``mask`` (cleaning) and a `CameraFrameGeometry` — and returns a flat dict keyed by ctapipe's DL1
column names (``hillas_*``, ``leakage_*``, ``concentration_*``, ``timing_*``, ``morphology_*``,
``intensity_*``, ``peak_time_*``; angles in deg, in the telescope frame). An image that fails
ctapipe's ImageQualityQuery (cleaned intensity > 0, at least 2 pixels) gets ctapipe's defaults
(NaN, and -1 for morphology counts). The kernels (`leakage_kernel`, `island_labels`,
`describe`, `stages.timing.lts_timing`) are numba functions on plain arrays; `image_kernel` runs
them all for one image in a single compiled call (the per-image Python cost is one call and one
dict).

`true_image_parameters` does what ctapipe's ImageProcessor does with a simulated true image: the
same parameters of the pixels with ``true_image > 0``, without timing and peak-time statistics,
``true_``-prefixed (``true_hillas_*``...; ``true_intensity_max``/``min`` int, -1 when the image
cannot be parametrised). `ImageParameters` writes them as ``tels[tid]["true_params"]``, and the
counts of ctapipe's ImageQualityQuery over the event's images (true images included, as ctapipe
counts them) as ``event["quality_counts"]["image"]`` (`stages.quality.query_counts`).

Timing uses ctapipe's least-trimmed-squares fit (5 random starts, 85 % of the points) with the
random starts of a generator reset to seed 0 for every image (`stages.timing`), so a result depends
on the image only, not on the order in which a worker saw the events (ctapipe shares one generator
across all images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from flow.graph.params import Param
from flow.graph.step import Stager

from .hillas import (
    CONCENTRATION_FIELDS,
    FOV_LAT,
    FOV_LON,
    HILLAS_FIELDS,
    PSI,
    choose_focal_length,
    concentration_kernel,
    hillas_kernel,
    pixel_width,
    telescope_frame,
)
from .quality import IMAGE_QUERY, image_criteria, query_counts
from .timing import LTS_DRAWS, LTS_SEED, lts_timing  # noqa: F401  (LTS_SEED re-exported)

LEAKAGE_FIELDS = ("leakage_pixels_width_1", "leakage_pixels_width_2",
                  "leakage_intensity_width_1", "leakage_intensity_width_2")
TIMING_FIELDS = ("timing_slope", "timing_intercept", "timing_deviation")
MORPHOLOGY_FIELDS = ("morphology_n_pixels", "morphology_n_islands", "morphology_n_small_islands",
                     "morphology_n_medium_islands", "morphology_n_large_islands")
STAT_NAMES = ("max", "min", "mean", "std", "skewness", "kurtosis")
FIELDS = (HILLAS_FIELDS + TIMING_FIELDS + LEAKAGE_FIELDS + CONCENTRATION_FIELDS
          + MORPHOLOGY_FIELDS + tuple(f"intensity_{s}" for s in STAT_NAMES)
          + tuple(f"peak_time_{s}" for s in STAT_NAMES))
N_FIELDS, N_HILLAS = len(FIELDS), len(HILLAS_FIELDS)
TIMING_AT = N_HILLAS
LEAKAGE_AT = TIMING_AT + len(TIMING_FIELDS)
CONCENTRATION_AT = LEAKAGE_AT + len(LEAKAGE_FIELDS)
MORPHOLOGY_AT = CONCENTRATION_AT + len(CONCENTRATION_FIELDS)
INTENSITY_AT = MORPHOLOGY_AT + len(MORPHOLOGY_FIELDS)
PEAK_TIME_AT = INTENSITY_AT + len(STAT_NAMES)
# ctapipe's true-image parameters: no peak time for a true image, so no timing_* / peak_time_*
TRUE_FIELDS = tuple(f for f in FIELDS if not f.startswith(("timing_", "peak_time_")))


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
def _block_sum(values, start, n):
    """numpy's pairwise_sum for n <= 128: eight running sums (one plain loop below 8)."""
    acc = np.zeros(8, dtype=values.dtype)
    if n < 8:
        for i in range(start, start + n):
            acc[0] += values[i]
        return acc[0]
    acc[:] = values[start:start + 8]
    i = 8
    while i < n - n % 8:
        for j in range(8):
            acc[j] += values[start + i + j]
        i += 8
    total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    for k in range(i, n):
        total += values[start + k]
    return total


@njit(cache=True)
def pairwise_sum(values):
    """numpy's pairwise summation (``values.sum()``, same rounding) in the values' own dtype.

    numpy halves blocks above 128 (at a multiple of 8) and adds the halves; here with an
    explicit stack (a cached numba function cannot call itself).
    """
    frames = np.empty((64, 3), dtype=np.int64)  # (start, n, halves done)
    sums = np.zeros(64, dtype=values.dtype)
    frames[0, 0], frames[0, 1], frames[0, 2] = 0, len(values), 0
    top, n_sums = 1, 0
    while top:
        top -= 1
        start, n, done = frames[top]
        if n <= 128:
            sums[n_sums] = _block_sum(values, start, n)
            n_sums += 1
        elif done:
            n_sums -= 1
            sums[n_sums - 1] += sums[n_sums]
        else:
            half = n // 2 - (n // 2) % 8
            frames[top, 2] = 1
            frames[top + 1, 0], frames[top + 1, 1], frames[top + 1, 2] = start + half, n - half, 0
            frames[top + 2, 0], frames[top + 2, 1], frames[top + 2, 2] = start, half, 0
            top += 3
    return sums[0]


@njit(cache=True)
def describe(values):
    """max, min, mean, std, skewness, kurtosis (Fisher) as ctapipe's descriptive_statistics.

    Bit for bit: ctapipe gets the image's own dtype (float32), numpy's ``mean``/``std`` (pairwise
    sums, reproduced by `pairwise_sum`), then its numba skewness and kurtosis in float64.
    Peak times of ~100 ns with ~1 ns spread keep only ~5 digits that way; ctapipe's are the
    reference, so these are computed the same way.
    """
    n = len(values)
    mean = pairwise_sum(values) / values.dtype.type(n)
    deviation = values - mean
    std = np.sqrt(pairwise_sum(deviation * deviation) / values.dtype.type(n))
    z = (values - np.float64(mean)) / np.float64(std)  # ctapipe's numba moments are float64
    return np.array([values.max(), values.min(), mean, std, np.mean(z**3), np.mean(z**4) - 3.0])


@njit(cache=True)
def image_kernel(image, peak_time, has_time, mask, x, y, area, width, indptr, indices, border1,
                 border2, draws):
    """(passes quality, all `FIELDS` as float64) of one image in one compiled call."""
    out = np.full(N_FIELDS, np.nan)
    sel = np.flatnonzero(mask)
    w = image[sel].astype(np.float64)
    if not (w.sum() > 0.0 and len(sel) > 1):
        return False, out
    xs, ys = x[sel], y[sel]
    hillas = hillas_kernel(xs, ys, area[sel], w)
    out[:N_HILLAS] = hillas
    out[LEAKAGE_AT:LEAKAGE_AT + 4] = leakage_kernel(image, mask, border1, border2)
    out[CONCENTRATION_AT:CONCENTRATION_AT + 3] = concentration_kernel(xs, ys, w, width[sel], hillas)
    out[MORPHOLOGY_AT:MORPHOLOGY_AT + 5] = morphology_kernel(mask, indptr, indices)
    out[INTENSITY_AT:INTENSITY_AT + 6] = describe(image[sel])
    if has_time:
        times = peak_time[sel].astype(np.float64)
        psi = np.deg2rad(hillas[PSI])
        longi = (xs - hillas[FOV_LON]) * np.cos(psi) + (ys - hillas[FOV_LAT]) * np.sin(psi)
        out[TIMING_AT:TIMING_AT + 3] = lts_timing(longi, times, draws)
        out[PEAK_TIME_AT:PEAK_TIME_AT + 6] = describe(peak_time[sel])
    return True, out


def default_parameters() -> dict:
    """ctapipe's parameters of an image that cannot be parametrised (NaN, -1 counts)."""
    out = dict.fromkeys(FIELDS, np.nan)
    out.update(dict.fromkeys(MORPHOLOGY_FIELDS, -1))
    return out


def image_parameters(image, peak_time, mask, geom: CameraFrameGeometry, draws=LTS_DRAWS) -> dict:
    """All DL1 parameters of one cleaned image (see module docstring); ``draws`` for the LTS fit."""
    image = np.asarray(image)
    ok, values = image_kernel(image, image if peak_time is None else np.asarray(peak_time),
                              peak_time is not None, np.asarray(mask, dtype=np.bool_), geom.x,
                              geom.y, geom.area, geom.width, geom.indptr, geom.indices,
                              geom.border1, geom.border2, draws)
    if not ok:
        return default_parameters()
    out = dict(zip(FIELDS, values.tolist(), strict=True))
    for key in MORPHOLOGY_FIELDS:
        out[key] = int(out[key])
    return out


def true_image_parameters(true_image, geom: CameraFrameGeometry) -> dict:
    """ctapipe's ``true_parameters`` of a simulated true image (see module docstring)."""
    image = np.asarray(true_image, dtype=np.int32)
    params = image_parameters(image, None, image > 0, geom)
    out = {f"true_{key}": params[key] for key in TRUE_FIELDS}
    for key in ("true_intensity_max", "true_intensity_min"):
        value = out[key]
        out[key] = -1 if value != value else int(value)  # NaN: ctapipe's int32 default, -1
    return out


def _warm_up() -> None:
    """Compile (or load from the cache) the kernel for writable and read-only float32 inputs."""
    camera = {"pix_x": np.array([0.0, 0.1, 0.2]), "pix_y": np.array([0.0, 0.05, 0.0]),
              "pix_area": np.full(3, 0.01), "pix_type": "hexagon",
              "neighbors_indptr": np.array([0, 1, 3, 4]), "neighbors_indices": np.array([1, 0, 2, 1])}
    geom = CameraFrameGeometry.from_camera(camera, 10.0)
    for writeable in (True, False):
        image = np.array([10.0, 20.0, 5.0], np.float32)
        times, mask = np.array([1.0, 2.0, 3.0], np.float32), np.ones(3, bool)
        for array in (image, times, mask):
            array.flags.writeable = writeable
        image_parameters(image, times, mask, geom)
        image_parameters(image, None, mask, geom)
        true_image = np.array([3, 0, 2], np.int32)
        true_image.flags.writeable = writeable
        image_parameters(true_image, None, true_image > 0, geom)


class ImageParameters(Stager):
    """``image``, ``peak_time``, ``mask`` -> ``params``; ``true_image`` -> ``true_params``."""

    focal_length_choice = Param(str, "effective", "focal length for the telescope frame "
                                "(effective where the file has one, as ctapipe)",
                                choices=("effective", "equivalent"))
    true_parameters = Param(bool, True, "also parametrise simulated true images, as ctapipe's "
                            "ImageProcessor (written to /simulation/event/telescope/parameters)")

    def setup(self) -> None:
        self._geometries: dict = {}
        _warm_up()

    def geometry(self, tel_id: int) -> CameraFrameGeometry:
        if tel_id not in self._geometries:
            tel = self.context["subarray"]["tels"][tel_id]
            focal = choose_focal_length(tel["optics"], self.focal_length_choice)
            self._geometries[tel_id] = CameraFrameGeometry.from_camera(tel["camera"], focal)
        return self._geometries[tel_id]

    def process(self, event: dict) -> dict:
        checked = []  # ImageQualityQuery results, true images included (as ctapipe counts them)
        for tel_id, data in event.get("tels", {}).items():
            if "mask" not in data:
                continue
            checked.append(image_criteria(data["image"], data["mask"]))
            data["params"] = {**data.get("params", {}), **image_parameters(
                data["image"], data.get("peak_time"), data["mask"], self.geometry(tel_id))}
            true_image = data.get("true_image") if self.true_parameters else None
            if true_image is not None:
                checked.append(image_criteria(true_image, np.asarray(true_image) > 0))
                data["true_params"] = true_image_parameters(true_image, self.geometry(tel_id))
        event.setdefault("quality_counts", {})["image"] = query_counts(IMAGE_QUERY, checked)
        return event
