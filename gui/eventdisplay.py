"""Event display: one telescope's image of a sampled event, drawn in the telescope frame (degrees).

Pixels come from ``context["subarray"]["tels"][tel_id]["camera"]`` (metres, camera frame) and are
converted with the optics' ``focal_length`` ``f`` (the one the stages use for camera -> FoV; the
equivalent focal length when it is missing), as in ctapipe (docs/event-schema.md):
``fov_lat = deg(atan(x'/f))``, ``fov_lon = deg(atan(y'/f))`` with ``(x', y')`` rotated by
``cam_rotation_deg``. Pixel symbols are hexagons or squares of size ``deg(spacing/f)`` (the small-angle
size at the camera centre; 0.5 % too small at 7° off axis). The Hillas ellipse (``hillas_fov_lon``,
``hillas_fov_lat``, ``hillas_length``, ``hillas_width``, ``hillas_psi`` from the ``fov_lon`` axis, all
in degrees) is drawn directly in that frame; the cleaning mask is outlined in white.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PyQt5 import QtCore, QtGui, QtWidgets

from . import theme


def camera_to_fov(camera: dict, focal_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (m) -> (fov_lon, fov_lat) in degrees, ctapipe's TelescopeFrame convention."""
    x = np.asarray(camera["pix_x"], dtype=float)
    y = np.asarray(camera["pix_y"], dtype=float)
    rot = math.radians(float(camera.get("cam_rotation_deg") or 0.0))
    if rot:
        x, y = x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)
    return np.rad2deg(np.arctan(y / focal_m)), np.rad2deg(np.arctan(x / focal_m))


def pixel_spacing_m(camera: dict) -> float:
    """Centre-to-centre distance of neighbouring pixels (from the pixel area, else nearest neighbour)."""
    area = camera.get("pix_area")
    hexagon = str(camera.get("pix_type", "hexagon")).startswith("hex")
    if area is not None and np.size(area):
        a = float(np.median(np.asarray(area, dtype=float)))
        if a > 0:
            return math.sqrt(2 * a / math.sqrt(3)) if hexagon else math.sqrt(a)
    x = np.asarray(camera["pix_x"], dtype=float)
    y = np.asarray(camera["pix_y"], dtype=float)
    sample = slice(0, min(len(x), 200))
    d = np.hypot(x[sample, None] - x[None, :], y[sample, None] - y[None, :])
    d[d == 0] = np.inf
    return float(np.median(d.min(axis=1)))


def pixel_symbol(hexagon: bool, rotation_deg: float) -> QtGui.QPainterPath:
    """A unit pixel shape (flat-to-flat 1) for pyqtgraph, vertices at 30° + k·60° (+ rotation)."""
    n, first = (6, 30.0) if hexagon else (4, 45.0)
    radius = (1 / math.sqrt(3)) if hexagon else (1 / math.sqrt(2))
    radius *= 0.97  # a hairline gap between pixels
    angles = [math.radians(first + rotation_deg + k * 360.0 / n) for k in range(n)]
    path = QtGui.QPainterPath()
    path.moveTo(radius * math.cos(angles[0]), radius * math.sin(angles[0]))
    for a in angles[1:]:
        path.lineTo(radius * math.cos(a), radius * math.sin(a))
    path.closeSubpath()
    return path


def ellipse_points(p: dict, n: int = 100) -> tuple[np.ndarray, np.ndarray] | None:
    """The 1-sigma Hillas ellipse in (fov_lon, fov_lat) degrees, or None without valid parameters."""
    try:
        cx, cy = float(p["hillas_fov_lon"]), float(p["hillas_fov_lat"])
        length, width = float(p["hillas_length"]), float(p["hillas_width"])
        psi = math.radians(float(p["hillas_psi"]))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (cx, cy, length, width, psi))):
        return None
    t = np.linspace(0, 2 * math.pi, n)
    u, v = length * np.cos(t), width * np.sin(t)
    return cx + u * math.cos(psi) - v * math.sin(psi), cy + u * math.sin(psi) + v * math.cos(psi)


class CameraGeometry:
    """What the display needs of one telescope's camera, computed once per context."""

    def __init__(self, tel: dict):
        camera = tel["camera"]
        optics = tel.get("optics") or {}
        # "focal_length" is the one the stages use for camera -> FoV (docs/event-schema.md)
        self.focal_m = float(optics.get("focal_length") or optics.get("equivalent_focal_length"))
        self.lon, self.lat = camera_to_fov(camera, self.focal_m)
        self.size_deg = math.degrees(pixel_spacing_m(camera) / self.focal_m)
        self.hexagon = str(camera.get("pix_type", "hexagon")).startswith("hex")
        # camera -> telescope frame swaps the axes (a reflection) after the camera rotation
        rotation = -(float(camera.get("pix_rotation_deg") or 0.0)
                     + float(camera.get("cam_rotation_deg") or 0.0))
        circle = str(camera.get("pix_type", "")).startswith("circ")
        self.symbol = "o" if circle else pixel_symbol(self.hexagon, rotation)
        self.name = camera.get("name", "?")
        self.n_pix = len(self.lon)


class EventDisplay(QtWidgets.QWidget):
    """Camera image + mask + Hillas ellipse of the newest sample, with a telescope selector."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.geometries: dict[int, CameraGeometry] = {}
        self.event: dict | None = None
        self.header: dict | None = None
        self.tel_id: int | None = None
        self.image: np.ndarray | None = None
        self._user_choice: int | None = None
        self.cmap = pg.colormap.get("inferno")

        top = QtWidgets.QHBoxLayout()
        self.title = QtWidgets.QLabel("event display: no sample yet (tap an edge)")
        self.title.setStyleSheet(f"color: {theme.MUTED};")
        self.tel_box = QtWidgets.QComboBox()
        self.tel_box.setMinimumWidth(150)
        self.tel_box.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToContents)
        self.tel_box.activated.connect(self._on_tel_chosen)
        top.addWidget(self.title, 1)
        top.addWidget(QtWidgets.QLabel("telescope"))
        top.addWidget(self.tel_box)

        self.view = pg.GraphicsLayoutWidget()
        self.plot = self.view.addPlot(row=0, col=0)
        self.plot.setAspectLocked(True)
        self.plot.showGrid(x=True, y=True, alpha=0.1)
        self.plot.setLabel("bottom", "fov_lon (deg)", color=theme.MUTED)
        self.plot.setLabel("left", "fov_lat (deg)", color=theme.MUTED)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.pixels = pg.ScatterPlotItem(pxMode=False, pen=None)
        self.mask_outline = pg.ScatterPlotItem(pxMode=False, brush=None,
                                               pen=pg.mkPen("#ffffff", width=1.6, cosmetic=True))
        self.ellipse = pg.PlotCurveItem(pen=pg.mkPen("#5ee0ff", width=2.2))
        self.axis_line = pg.PlotCurveItem(pen=pg.mkPen("#5ee0ff", width=1, style=QtCore.Qt.DashLine))
        self.centre = pg.ScatterPlotItem(size=8, symbol="+", pen=pg.mkPen("#5ee0ff", width=2))
        for item in (self.pixels, self.mask_outline, self.ellipse, self.axis_line, self.centre):
            self.plot.addItem(item)
        self.mask_outline.setZValue(2)
        self.ellipse.setZValue(3)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=self.cmap, interactive=False,
                                        width=12, label="charge (p.e.)")
        self.view.addItem(self.colorbar, row=0, col=1)
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet(f"color: {theme.TEXT}; font-family: monospace;")
        for label in (self.info, self.title):  # long texts must not widen the window
            label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        self.info.setWordWrap(True)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.info)

    # -- data in
    def set_context(self, context: dict | None) -> None:
        self.geometries = {}
        tels = ((context or {}).get("subarray") or {}).get("tels") or {}
        for tid, tel in tels.items():
            try:
                self.geometries[int(tid)] = CameraGeometry(tel)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                continue  # a telescope without usable geometry is skipped, not fatal

    def reset(self) -> None:
        self.geometries, self.event, self.header, self.tel_id, self.image = {}, None, None, None, None
        self._user_choice = None
        self.tel_box.clear()
        for item in (self.pixels, self.mask_outline, self.centre):
            item.clear()
        self.ellipse.setData([], [])
        self.axis_line.setData([], [])
        self.title.setText("event display: no sample yet (tap an edge)")
        self.info.setText("")

    def set_sample(self, header: dict, event: dict) -> None:
        self.header, self.event = header, event
        tels = {int(t): v for t, v in (event.get("tels") or {}).items()
                if isinstance(v, dict) and v.get("image") is not None and int(t) in self.geometries}
        self.title.setText(f"event {header.get('key')}  ·  edge {header.get('edge')}")
        self.title.setStyleSheet(f"color: {theme.TEXT};")
        if not tels:
            self.info.setText("no telescope image with known geometry in this sample"
                              if event.get("tels") else "sample has no telescope data")
            return
        brightest = max(tels, key=lambda t: self._signal(tels[t]))
        chosen = self._user_choice if self._user_choice in tels else brightest
        self.tel_box.blockSignals(True)
        self.tel_box.clear()
        for t in sorted(tels):
            self.tel_box.addItem(f"tel {t}  ({self.geometries[t].name})", t)
        self.tel_box.setCurrentIndex(sorted(tels).index(chosen))
        self.tel_box.blockSignals(False)
        self.draw(chosen)

    @staticmethod
    def _signal(tel: dict) -> float:
        """Charge in the cleaning mask (all pixels without one): the noise of a big camera does not
        outweigh the shower of a small one."""
        image = np.asarray(tel["image"], dtype=float)
        mask = tel.get("mask")
        if mask is not None and np.shape(mask) == image.shape:
            return float(np.nansum(np.where(np.asarray(mask, dtype=bool), image, 0.0)))
        return float(np.nansum(image))

    def _on_tel_chosen(self, index: int) -> None:
        self._user_choice = self.tel_box.itemData(index)
        self.draw(self._user_choice)

    # -- drawing
    def draw(self, tel_id: int) -> None:
        geom = self.geometries[tel_id]
        tel = self.event["tels"].get(tel_id, self.event["tels"].get(str(tel_id)))
        image = np.asarray(tel["image"], dtype=float)
        if image.shape != geom.lon.shape:
            self.info.setText(f"tel {tel_id}: image has {image.size} pixels, geometry {geom.n_pix}")
            return
        self.tel_id, self.image = tel_id, image
        finite = image[np.isfinite(image)]
        lo, hi = (float(np.percentile(finite, 1)), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = max(hi, lo + 1e-6)
        rgba = self.cmap.map(np.clip((np.nan_to_num(image, nan=lo) - lo) / (hi - lo), 0, 1), mode="byte")
        brushes = [QtGui.QBrush(QtGui.QColor(int(r), int(g), int(b))) for r, g, b, _ in rgba]
        self.pixels.setData(x=geom.lon, y=geom.lat, size=geom.size_deg, symbol=geom.symbol,
                            brush=brushes, pen=None)
        self.colorbar.setLevels((lo, hi))
        mask = tel.get("mask")
        if mask is not None and np.shape(mask) == image.shape and np.any(mask):
            mask = np.asarray(mask, dtype=bool)
            self.mask_outline.setData(x=geom.lon[mask], y=geom.lat[mask], size=geom.size_deg,
                                      symbol=geom.symbol, brush=None)
        else:
            self.mask_outline.clear()
        params = tel.get("params") or {}
        pts = ellipse_points(params)
        if pts is None:
            self.ellipse.setData([], [])
            self.axis_line.setData([], [])
            self.centre.clear()
        else:
            self.ellipse.setData(*pts)
            cx, cy = params["hillas_fov_lon"], params["hillas_fov_lat"]
            psi = math.radians(params["hillas_psi"])
            reach = 3 * float(params["hillas_length"])
            self.axis_line.setData([cx - reach * math.cos(psi), cx + reach * math.cos(psi)],
                                   [cy - reach * math.sin(psi), cy + reach * math.sin(psi)])
            self.centre.setData([cx], [cy])
        n_mask = int(np.count_nonzero(mask)) if mask is not None else 0
        text = f"tel {tel_id}  {geom.name}  ·  {geom.n_pix} pix  ·  {n_mask} in mask"
        if params.get("hillas_intensity") is not None:
            text += f"  ·  size {params['hillas_intensity']:.0f} p.e."
        if pts is not None:
            text += (f"  ·  length {params['hillas_length']:.3f}°  width {params['hillas_width']:.3f}°"
                     f"  psi {params['hillas_psi']:.0f}°")
        self.info.setText(text)
        self.info.setToolTip(text)
        r = float(np.nanmax(np.hypot(geom.lon, geom.lat))) + geom.size_deg
        self.plot.setRange(xRange=(-r, r), yRange=(-r, r), padding=0.02)
