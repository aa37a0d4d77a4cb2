"""Hillas moments and concentration of a cleaned image, in the telescope frame (deg).

Contract: the kernels take the *selected* (cleaned) pixels of one image as float64 arrays —
``x = fov_lon`` and ``y = fov_lat`` in deg, ``area`` in deg², ``image`` in p.e. — and return flat
float64 arrays whose fields are named by `HILLAS_FIELDS` / `CONCENTRATION_FIELDS` (ctapipe's DL1
column names; angles in deg). They reproduce ctapipe's ``hillas_parameters`` (PCA with ddof=0,
psi in (-90°, 90°], MAGIC-style uncertainties) and ``concentration_parameters`` without astropy.
Degenerate inputs give NaN fields instead of exceptions.

`telescope_frame` converts camera-frame pixel positions (m) to the telescope frame as ctapipe's
``CameraGeometry.transform_to(TelescopeFrame())`` does: undo ``cam_rotation``, then
``fov_lon = y / f``, ``fov_lat = x / f`` (rad -> deg), areas scaled by ``(1/f)²``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HILLAS_FIELDS = (
    "hillas_intensity", "hillas_skewness", "hillas_kurtosis", "hillas_fov_lon", "hillas_fov_lat",
    "hillas_r", "hillas_phi", "hillas_length", "hillas_length_uncertainty", "hillas_width",
    "hillas_width_uncertainty", "hillas_psi", "hillas_psi_uncertainty",
    "hillas_transverse_cog_uncertainty",
)
CONCENTRATION_FIELDS = ("concentration_cog", "concentration_core", "concentration_pixel")
(INTENSITY, SKEWNESS, KURTOSIS, FOV_LON, FOV_LAT, R, PHI, LENGTH, LENGTH_UNC, WIDTH, WIDTH_UNC,
 PSI, PSI_UNC, TRANSVERSE_UNC) = range(len(HILLAS_FIELDS))
EPS = np.finfo(np.float64).eps


def choose_focal_length(optics: dict, choice: str = "effective") -> float:
    """The focal length (m) for camera -> telescope frame, as ctapipe's ``focal_length_choice``.

    ``"effective"`` (ctapipe 0.28's default) takes the effective focal length where the file has
    one (prod5 and later; the SST-1M and ASTRI prod4 files) and else the equivalent one, which is
    what ctapipe-process then needs ``focal_length_choice=EQUIVALENT`` for; ``"equivalent"``
    always takes the equivalent (nominal) focal length.
    """
    effective = float(optics.get("effective_focal_length", np.nan))
    if choice == "effective" and np.isfinite(effective):
        return effective
    return float(optics["equivalent_focal_length"])


def telescope_frame(pix_x, pix_y, pix_area, focal_length, cam_rotation_deg=0.0):
    """(fov_lon deg, fov_lat deg, area deg²) of camera-frame pixels (m) for focal length (m)."""
    x, y = np.asarray(pix_x, np.float64), np.asarray(pix_y, np.float64)
    if cam_rotation_deg != 0.0:
        c, s = np.cos(np.deg2rad(cam_rotation_deg)), np.sin(np.deg2rad(cam_rotation_deg))
        x, y = c * x + s * y, -s * x + c * y
    scale = np.rad2deg(1.0 / focal_length)
    return y * scale, x * scale, np.asarray(pix_area, np.float64) * scale**2


def pixel_width(pix_area, pix_type: str):
    """In-circle diameter (hexagon), edge (square) or diameter (circle) from the pixel area."""
    if pix_type == "hexagon":
        return 2 * np.sqrt(pix_area / (2 * np.sqrt(3)))
    if pix_type == "square":
        return np.sqrt(pix_area)
    return 2 * np.sqrt(pix_area / np.pi)


@njit(cache=True)
def _principal_axes(cxx, cyy, cxy):
    """(length, width, psi rad) of a 2x2 covariance, like numpy.linalg.eigh + arctan(vy/vx)."""
    half_sum, half_diff = 0.5 * (cxx + cyy), 0.5 * (cxx - cyy)
    disc = np.sqrt(half_diff * half_diff + cxy * cxy)
    big, small = half_sum + disc, half_sum - disc
    big = 0.0 if abs(big) <= EPS else big
    small = 0.0 if abs(small) <= EPS else small
    if cxx > cyy:
        psi = np.arctan(cxy / (big - cyy))
    elif cxy != 0.0:
        psi = np.arctan((big - cxx) / cxy)
    else:
        psi = np.pi / 2
    return np.sqrt(big), np.sqrt(small), psi


@njit(cache=True)
def hillas_kernel(x, y, area, image):
    """Hillas parameters (see `HILLAS_FIELDS`) of the selected pixels; NaN if size is 0."""
    out = np.full(len(HILLAS_FIELDS), np.nan)
    size = image.sum()
    if not size > 0.0:
        return out
    cog_x = (x * image).sum() / size
    cog_y = (y * image).sum() / size
    dx, dy = x - cog_x, y - cog_y
    cxx = (image * dx * dx).sum() / size
    cyy = (image * dy * dy).sum() / size
    cxy = (image * dx * dy).sum() / size
    length, width, psi = _principal_axes(cxx, cyy, cxy)
    out[INTENSITY], out[FOV_LON], out[FOV_LAT] = size, cog_x, cog_y
    out[R], out[PHI] = np.sqrt(cog_x**2 + cog_y**2), np.rad2deg(np.arctan2(cog_y, cog_x))
    out[LENGTH], out[WIDTH] = length, width
    if length == 0.0:
        return out
    out[PSI] = np.rad2deg(psi)
    cos_psi, sin_psi = np.cos(psi), np.sin(psi)
    longi = dx * cos_psi + dy * sin_psi
    trans = -dx * sin_psi + dy * cos_psi
    out[SKEWNESS] = (image * longi**3).sum() / size / length**3
    out[KURTOSIS] = (image * longi**4).sum() / size / length**4
    _psi_uncertainty(out, longi, trans, image / area, length, width)
    a, b, c = (1 + np.cos(2 * psi)) / 2, (1 - np.cos(2 * psi)) / 2, np.sin(2 * psi)
    A, B, C = (dx * dx - cxx) / size, (dy * dy - cyy) / size, (dx * dy - cxy) / size
    out[LENGTH_UNC] = np.sqrt((((a * A) + (b * B) + (c * C)) ** 2 * image).sum()) / (2 * length)
    if width != 0.0:
        out[WIDTH_UNC] = np.sqrt((((b * A) + (a * B) - (c * C)) ** 2 * image).sum()) / (2 * width)
    return out


@njit(cache=True)
def _psi_uncertainty(out, longi, trans, weight, length, width):
    """ctapipe's weighted least-squares psi and transverse cog uncertainties (2x2 closed form)."""
    s0, s1, s2 = weight.sum(), (weight * longi).sum(), (weight * longi * longi).sum()
    t0, t1 = (weight * trans).sum(), (weight * longi * trans).sum()
    det = s2 * s0 - s1 * s1
    if det == 0.0:
        return
    p0 = (s0 * t1 - s1 * t0) / det
    elongation = 1.0 + np.tan(width / length * np.pi / 2.0) ** 2
    out[PSI_UNC] = np.rad2deg(np.sqrt(s0 / det + p0 * p0) * elongation)
    out[TRANSVERSE_UNC] = np.sqrt(s2 / det * (1.0 + np.sin(p0) ** 2))


@njit(cache=True)
def concentration_kernel(x, y, image, pix_width, hillas):
    """(cog, core, pixel) concentrations of the selected pixels for `hillas_kernel` output."""
    out = np.full(3, np.nan)
    size = hillas[INTENSITY]
    if not size > 0.0:
        return out
    cog, core = 0.0, 0.0
    length, width = hillas[LENGTH], hillas[WIDTH]
    psi = np.deg2rad(hillas[PSI])
    cos_psi, sin_psi = np.cos(psi), np.sin(psi)
    for i in range(len(image)):
        dx, dy = x[i] - hillas[FOV_LON], y[i] - hillas[FOV_LAT]
        if dx * dx + dy * dy < pix_width[i] ** 2:
            cog += image[i]
        longi, trans = dx * cos_psi + dy * sin_psi, -dx * sin_psi + dy * cos_psi
        if width != 0.0 and longi**2 / length**2 + trans**2 / width**2 <= 1.0:
            core += image[i]
    out[0], out[1], out[2] = cog / size, core / size, image.max() / size
    return out
