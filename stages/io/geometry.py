"""Camera geometries as plain arrays, and the pixel-neighbour relation ctapipe uses.

All functions here return numpy arrays or plain dicts in the layout of
``context["subarray"]["tels"][tel_id]["camera"]`` (docs/event-schema.md). Nothing here downloads:
toy cameras are built in code, simtel cameras come from the file.

`neighbors_csr` reproduces ``ctapipe.instrument.CameraGeometry.calc_pixel_neighbors(diagonal=False)``:
the ``k`` nearest pixels (6 for hexagon/circle pixels with the L2 norm, 4 for square pixels with the
L1 norm) that lie closer than ``radius`` times the nearest distance (1.4 for hexagons, 1.5 for
squares) are neighbours. It uses scipy's cKDTree when available (like ctapipe), else numpy.
"""

from __future__ import annotations

import numpy as np

HEX_K, HEX_RADIUS = 6, 1.4
SQUARE_K, SQUARE_RADIUS = 4, 1.5


def _knn(points: np.ndarray, k: int, norm: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices of the k+1 nearest points (self included), like cKDTree.query."""
    try:
        from scipy.spatial import cKDTree
    except ImportError:  # pragma: no cover - scipy comes with ctapipe
        cKDTree = None
    if cKDTree is not None:
        tree = cKDTree(points)
        return tree.query(tree.data, k=k + 1, p=norm)
    n = len(points)
    dist = np.empty((n, k + 1))
    idx = np.empty((n, k + 1), dtype=np.int64)
    for start in range(0, n, 512):
        diff = points[start:start + 512, None, :] - points[None, :, :]
        d = np.abs(diff).sum(-1) if norm == 1 else np.sqrt((diff**2).sum(-1))
        order = np.argsort(d, axis=1, kind="stable")[:, : k + 1]
        idx[start:start + 512] = order
        dist[start:start + 512] = np.take_along_axis(d, order, axis=1)
    return dist, idx


def neighbors_csr(pix_x, pix_y, pix_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists as CSR (indptr int32 (n+1,), indices int32), ctapipe's algorithm."""
    pix_x = np.asarray(pix_x, dtype=np.float64)
    pix_y = np.asarray(pix_y, dtype=np.float64)
    n = len(pix_x)
    if n <= 1:
        return np.arange(n + 1, dtype=np.int32), np.zeros(n, dtype=np.int32)
    if pix_type == "square":
        k, radius, norm = SQUARE_K, SQUARE_RADIUS, 1
    else:
        k, radius, norm = HEX_K, HEX_RADIUS, 2
    k = min(k, n - 1)
    dist, cand = _knn(np.column_stack([pix_x, pix_y]), k, norm)
    dist, cand = dist[:, 1:], cand[:, 1:]
    inside = dist < radius * dist.min(axis=1)[:, None]
    rows, cols = np.nonzero(inside)
    neigh = cand[rows, cols]
    # CSR with sorted column indices per row, as scipy's csr_array builds it
    order = np.lexsort((neigh, rows))
    rows, neigh = rows[order], neigh[order]
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.add.at(indptr, rows + 1, 1)
    return np.cumsum(indptr, dtype=np.int32), neigh.astype(np.int32)


def neighbor_lists(indptr: np.ndarray, indices: np.ndarray) -> list[list[int]]:
    """CSR to a list of neighbour id lists (handy in tests and for ctapipe's ``neighbors=``)."""
    return [indices[indptr[i]:indptr[i + 1]].tolist() for i in range(len(indptr) - 1)]


def hex_camera(n_rings: int = 10, pixel_pitch: float = 0.05, name: str = "ToyHexCam") -> dict:
    """A round camera of hexagonal pixels on a hex grid (flat-top pixels, pix_rotation 30 deg)."""
    xs, ys = [0.0], [0.0]
    directions = [(1, 0), (0, 1), (-1, 1), (-1, 0), (0, -1), (1, -1)]
    for ring in range(1, n_rings + 1):
        q, r = ring, 0  # start at a corner, walk the six edges in axial coordinates
        for dq, dr in directions[2:] + directions[:2]:
            for _ in range(ring):
                xs.append(pixel_pitch * (q + r / 2.0))
                ys.append(pixel_pitch * r * np.sqrt(3) / 2.0)
                q, r = q + dq, r + dr
    pix_x, pix_y = np.array(xs), np.array(ys)
    area = np.full(len(pix_x), np.sqrt(3) / 2.0 * pixel_pitch**2)
    return camera_dict(name, pix_x, pix_y, area, "hexagon", pix_rotation_deg=30.0)


def square_camera(n_side: int = 40, pixel_pitch: float = 0.006, name: str = "ToySquareCam") -> dict:
    """A square camera of square pixels on a regular grid, centred on the optical axis."""
    coords = (np.arange(n_side) - (n_side - 1) / 2.0) * pixel_pitch
    pix_x, pix_y = (a.ravel() for a in np.meshgrid(coords, coords))
    area = np.full(len(pix_x), pixel_pitch**2)
    return camera_dict(name, pix_x, pix_y, area, "square", pix_rotation_deg=0.0)


def camera_dict(name, pix_x, pix_y, pix_area, pix_type, pix_rotation_deg=0.0,
                cam_rotation_deg=0.0) -> dict:
    """The context ``camera`` mapping, with the neighbour CSR computed once."""
    indptr, indices = neighbors_csr(pix_x, pix_y, pix_type)
    return {
        "name": name,
        "pix_x": np.asarray(pix_x, dtype=np.float64),
        "pix_y": np.asarray(pix_y, dtype=np.float64),
        "pix_area": np.asarray(pix_area, dtype=np.float64),
        "pix_type": pix_type,
        "pix_rotation_deg": float(pix_rotation_deg),
        "cam_rotation_deg": float(cam_rotation_deg),
        "neighbors_indptr": indptr,
        "neighbors_indices": indices,
    }
