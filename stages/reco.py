"""Stereo shower geometry by intersecting Hillas planes, as ctapipe's HillasReconstructor.

Contract: `reconstruct_hillas` takes per-telescope arrays (Hillas centroid ``fov_lon``/``fov_lat``,
``psi`` in deg in each telescope frame, intensity, length, width, camera radius in deg, telescope
pointing alt/az in rad, ground positions in m) plus the array pointing, and returns a flat dict:
``alt``/``az`` (deg), ``alt_uncert``/``az_uncert`` (deg, mean angle of the pair crossings to the
result), ``core_x``/``core_y`` (m, ground), ``core_tilted_x``/``core_tilted_y``, ``h_max`` (m above
the reference height: add it), ``is_valid``, and ``core_psi`` (deg, one per telescope: the
ellipse's axis in the array-pointing frame that the core fit uses; ctapipe stores it as each
telescope's DL1 ``core_psi``). The other uncertainties are not estimated (NaN), as in ctapipe.
Fewer than 2 telescopes gives ``is_valid=False`` and NaN. The coordinate transforms are ctapipe's, written as plain rotation matrices:

- TelescopeFrame -> AltAz: ``v_altaz = (R_y(-alt) R_z(az))ᵀ v_tel`` (astropy's sky-offset frame);
- ground -> tilted frame: ctapipe's ``_get_shower_trans_matrix``; core projected along the pointing.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from flow.graph.params import Param
from flow.graph.step import Stager

from .hillas import choose_focal_length
from .quality import passes_stereo_quality

INVALID = {"alt": np.nan, "az": np.nan, "alt_uncert": np.nan, "az_uncert": np.nan,
           "core_x": np.nan, "core_y": np.nan, "core_tilted_x": np.nan, "core_tilted_y": np.nan,
           "h_max": np.nan, "is_valid": False}


def _rot_y(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def _rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def altaz_to_telescope_matrix(alt, az):
    """Rotation taking AltAz cartesian vectors into the TelescopeFrame of pointing (alt, az)."""
    return _rot_y(-alt) @ _rot_z(az)


def unit_vectors(lon, lat):
    """Cartesian unit vectors (n, 3) of spherical lon/lat (rad)."""
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def tilted_matrix(alt, az):
    """ctapipe's ground -> tilted-ground rotation for pointing (alt, az) in rad."""
    cos_z, sin_z, cos_az, sin_az = np.sin(alt), np.cos(alt), np.cos(az), np.sin(az)
    return np.array([[cos_z * cos_az, -cos_z * sin_az, -sin_z],
                     [sin_az, cos_az, 0.0],
                     [sin_z * cos_az, -sin_z * sin_az, cos_z]])


def line_line_intersection_3d(directions, origins):
    """Point closest (least squares) to lines through ``origins`` along unit ``directions``."""
    outer = directions[:, :, None] * directions[:, None, :] - np.eye(3)
    return np.linalg.inv(outer.sum(axis=0)) @ np.einsum("nij,nj->i", outer, origins)


def _to_altaz(fov_lon, fov_lat, tel_alt, tel_az):
    """AltAz cartesian vectors (n, 3) of telescope-frame points (rad)."""
    v_tel = unit_vectors(fov_lon, fov_lat)
    mats = np.stack([altaz_to_telescope_matrix(a, z) for a, z in zip(tel_alt, tel_az, strict=True)])
    return np.einsum("nji,nj->ni", mats, v_tel)


def estimate_direction(norm, weight):
    """Weighted mean of the pairwise plane crossings; (unit vector, mean off-angle rad)."""
    index_a, index_b = np.array(list(combinations(range(len(norm)), 2))).T
    crossings = np.cross(norm[index_a], norm[index_b])
    crossings[crossings[:, 2] < 0] *= -1
    result = np.average(crossings, weights=weight[index_a] * weight[index_b], axis=0)
    result /= np.linalg.norm(result)
    cos = crossings @ result / np.linalg.norm(crossings, axis=1)
    return result, float(np.mean(np.arccos(np.clip(cos, -1.0, 1.0))))


def reconstruct_hillas(fov_lon, fov_lat, psi, intensity, length, width, cam_radius_deg,
                       tel_alt, tel_az, positions, array_alt, array_az) -> dict:
    """Direction, core and h_max from >= 2 telescopes' Hillas ellipses (see module docstring)."""
    if len(fov_lon) < 2 or not np.all(np.asarray(width) > 0):
        return dict(INVALID)
    psi = np.deg2rad(np.asarray(psi, np.float64))
    # pointings often arrive as float32: trig in float32 would cost ~1e-8 rad (0.5 m in h_max)
    tel_alt, tel_az = np.asarray(tel_alt, np.float64), np.asarray(tel_az, np.float64)
    array_alt, array_az = float(array_alt), float(array_az)
    lon1, lat1 = np.asarray(fov_lon, np.float64), np.asarray(fov_lat, np.float64)
    lon2 = lon1 + 0.1 * np.asarray(cam_radius_deg) * np.cos(psi)
    lat2 = lat1 + 0.1 * np.asarray(cam_radius_deg) * np.sin(psi)
    cog = _to_altaz(np.deg2rad(lon1), np.deg2rad(lat1), tel_alt, tel_az)
    p2 = _to_altaz(np.deg2rad(lon2), np.deg2rad(lat2), tel_alt, tel_az)
    flip = np.array([1.0, -1.0, 1.0])  # AltAz (az east of north) -> right-handed (x N, y W, z up)
    cog_cart, p2_cart = cog * flip, p2 * flip
    weights = np.asarray(intensity) * np.asarray(length) / np.asarray(width)
    direction, err = estimate_direction(np.cross(cog_cart, p2_cart), weights)
    # psi in the array-pointing "nominal" camera: x ~ fov_lat, y ~ fov_lon
    to_array = altaz_to_telescope_matrix(array_alt, array_az)
    c_arr, p_arr = cog @ to_array.T, p2 @ to_array.T
    lon_c, lat_c = np.arctan2(c_arr[:, 1], c_arr[:, 0]), np.arctan2(c_arr[:, 2], np.hypot(*c_arr[:, :2].T))
    lon_p, lat_p = np.arctan2(p_arr[:, 1], p_arr[:, 0]), np.arctan2(p_arr[:, 2], np.hypot(*p_arr[:, :2].T))
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected_psi = np.arctan((lon_c - lon_p) / (lat_c - lat_p))
    trans = tilted_matrix(array_alt, array_az)
    positions = np.asarray(positions, np.float64)
    uvw = np.column_stack([np.cos(corrected_psi), np.sin(corrected_psi), np.zeros(len(psi))])
    core_tilted = line_line_intersection_3d(uvw, positions @ trans.T)
    ground = trans.T @ np.array([core_tilted[0], core_tilted[1], 0.0])
    core_x = ground[0] - trans[2, 0] * ground[2] / trans[2, 2]
    core_y = ground[1] - trans[2, 1] * ground[2] / trans[2, 2]
    h_max = line_line_intersection_3d(cog_cart, positions)[2]
    alt = np.arctan2(direction[2], np.hypot(direction[0], direction[1]))
    az = (-np.arctan2(direction[1], direction[0])) % (2 * np.pi)
    return {"alt": float(np.rad2deg(alt)), "az": float(np.rad2deg(az)),
            "alt_uncert": float(np.rad2deg(err)), "az_uncert": float(np.rad2deg(err)),
            "core_x": float(core_x), "core_y": float(core_y),
            "core_tilted_x": float(core_tilted[0]), "core_tilted_y": float(core_tilted[1]),
            "h_max": float(h_max), "is_valid": True,
            "core_psi": np.rad2deg(corrected_psi)}


def camera_radius_deg(camera: dict, focal_length: float) -> float:
    """ctapipe's guess_radius (mean centre distance of border pixels) as an angle in deg."""
    x, y = np.asarray(camera["pix_x"]), np.asarray(camera["pix_y"])
    n_neighbors = np.diff(camera["neighbors_indptr"])
    border = n_neighbors < n_neighbors.max()
    radius = np.sqrt((x[border] - x.mean()) ** 2 + (y[border] - y.mean()) ** 2).mean()
    return float(np.rad2deg(radius / focal_length))


class HillasReconstruction(Stager):
    """Telescope ``params`` + pointing -> ``event["dl2"]`` geometry (ctapipe HillasReconstructor).

    The telescopes used also get their ``params["core_psi"]``, as ctapipe's reconstructor sets.
    """

    focal_length_choice = Param(str, "effective", "focal length used for the camera radius "
                                "(effective where the file has one, as ctapipe)",
                                choices=("effective", "equivalent"))

    def setup(self) -> None:
        self._radius: dict = {}

    def radius(self, tel_id: int) -> float:
        if tel_id not in self._radius:
            tel = self.context["subarray"]["tels"][tel_id]
            focal = choose_focal_length(tel["optics"], self.focal_length_choice)
            self._radius[tel_id] = camera_radius_deg(tel["camera"], focal)
        return self._radius[tel_id]

    def process(self, event: dict) -> dict:
        tels = self.context["subarray"]["tels"]
        pointing = event.get("pointing", {})
        use = [tid for tid, data in sorted(event.get("tels", {}).items())
               if data.get("use_for_stereo", passes_stereo_quality(data.get("params", {})))]
        dl2 = event.setdefault("dl2", {})
        dl2.update(INVALID)
        dl2["multiplicity"], dl2["telescopes"] = len(use), np.array(use, dtype=np.int64)
        if len(use) < 2 or "alt" not in pointing:
            return event
        params = [event["tels"][tid]["params"] for tid in use]
        tel_pointing = [event["tels"][tid].get("pointing", pointing) for tid in use]

        def column(key):
            return np.array([p[key] for p in params], dtype=np.float64)

        dl2.update(reconstruct_hillas(
            column("hillas_fov_lon"), column("hillas_fov_lat"), column("hillas_psi"),
            column("hillas_intensity"), column("hillas_length"), column("hillas_width"),
            np.array([self.radius(tid) for tid in use]),
            np.array([p["alt"] for p in tel_pointing]), np.array([p["az"] for p in tel_pointing]),
            np.array([tels[tid]["position"] for tid in use]), pointing["alt"], pointing["az"]))
        for tid, psi in zip(use, dl2.pop("core_psi", ()), strict=False):
            event["tels"][tid]["params"]["core_psi"] = float(psi)  # ctapipe's DL1 core_psi
        if dl2["is_valid"]:
            dl2["h_max"] += float(self.context["subarray"].get("reference_location", {})
                                  .get("height_m", 0.0))
        dl2["average_intensity"] = float(column("hillas_intensity").mean())
        return event
