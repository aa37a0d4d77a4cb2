"""Synthetic air showers: an unlimited, deterministic event source for demos and tests.

`ToyEventSource` draws gamma (narrow ellipses whose major axis points to the source, at the camera
centre) and proton showers (wider, randomly oriented, off-axis) on a small array of toy telescopes
(`stages.io.geometry`). Each event is a pure function of ``(seed, index)``, so a redelivered or
re-run event is identical.

An event is made in two parts, each a pure function:

1. `draw_event` (cheap, microseconds): the shower truth from ``default_rng((seed, index))`` and,
   per triggered telescope, the Hillas-like ellipse of its light (``toy_ellipse``), plus the
   event's ``toy_seed``;
2. `render_event` (the costly part, milliseconds): per telescope, from
   ``default_rng((seed, index, tel_id))``, the Poisson photo-electron image (``true_image``) and
   either an R1-like ``waveform`` (1, n_pix, n_samples) in p.e. per sample (summing a whole
   waveform gives the charge; Gaussian pulses peaking at a time that grows along the major axis,
   per-sample noise; the reference pulse shape is in the context so charge extraction can apply
   its integration correction) or, without waveforms, ``image`` and ``peak_time`` directly.

With ``render: true`` (the default) the source does both; with ``render: false`` it yields drawn
events and a `ToyRenderer` step renders them, so the costly part runs in scaled workers rather than
in the one producer process. Either way the rendered events are the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping

import numpy as np

from flow.graph.params import Param
from flow.graph.step import Keyed, Producer, Stager

from .geometry import hex_camera, square_camera
from .toy_simconfig import simulation_context

GAMMA, PROTON = 0, 101
POINTING_ALT_DEG, POINTING_AZ_DEG = 70.0, 0.0
PULSE_SIGMA_NS = 1.5
REF_WIDTH_NS = 0.1
SAMPLING_RATE_GHZ = 1.0
TRIGGER_PE = 50.0
HEX_FOCAL_M, SQUARE_FOCAL_M = 16.0, 2.15


def reference_pulse(n: int = 200) -> np.ndarray:
    """A Gaussian reference pulse (1, n) sampled every REF_WIDTH_NS, peak normalised to 1."""
    t = np.arange(n) * REF_WIDTH_NS
    return np.exp(-0.5 * ((t - t.mean()) / PULSE_SIGMA_NS) ** 2)[None, :]


def toy_subarray(n_tels: int, camera: str, n_samples: int) -> dict:
    """The context subarray: telescopes on a 120 m grid, cameras per ``camera`` kind."""
    cams = {"hex": hex_camera(), "square": square_camera()}
    side = int(np.ceil(np.sqrt(n_tels)))
    tels = {}
    for i in range(n_tels):
        kind = camera if camera != "mixed" else ("hex" if i % 2 == 0 else "square")
        focal = HEX_FOCAL_M if kind == "hex" else SQUARE_FOCAL_M
        x = (i % side - (side - 1) / 2) * 120.0
        y = (i // side - (side - 1) / 2) * 120.0
        tels[i + 1] = {
            "position": np.array([x, y, 0.0]),
            "optics": {"name": f"Toy{kind.title()}Optics", "focal_length": focal,
                       "equivalent_focal_length": focal, "effective_focal_length": focal,
                       "mirror_area": 100.0 if kind == "hex" else 8.0},
            "camera": cams[kind],
            "n_gains": 1,
            "n_samples": n_samples,
            "sampling_rate_ghz": SAMPLING_RATE_GHZ,
            "reference_pulse_shape": reference_pulse(),
            "reference_pulse_sample_width_ns": REF_WIDTH_NS,
        }
    return {"name": f"Toy{n_tels}", "tels": tels,
            "reference_location": {"lon_deg": 0.0, "lat_deg": 0.0, "height_m": 2000.0}}


def draw_shower(rng: np.random.Generator, is_gamma: bool) -> dict:
    """Truth of one shower: E^-2 spectrum 0.05-50 TeV, core within 400 m."""
    emin, emax = 0.05, 50.0
    energy = 1.0 / (1.0 / emin - rng.random() * (1.0 / emin - 1.0 / emax))
    alt, az = np.deg2rad(POINTING_ALT_DEG), np.deg2rad(POINTING_AZ_DEG)
    if not is_gamma:
        off, phi = np.deg2rad(3.0) * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        alt, az = alt + off * np.sin(phi), az + off * np.cos(phi) / np.cos(alt)
    r, phi = 400.0 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    return {
        "energy": float(energy), "alt": float(alt), "az": float(az % (2 * np.pi)),
        "core_x": float(r * np.cos(phi)), "core_y": float(r * np.sin(phi)),
        "h_first_int": float(rng.normal(22000.0 if is_gamma else 18000.0, 3000.0)),
        "x_max": float(300.0 + 60.0 * np.log10(energy) + rng.normal(0, 20.0)),
        "shower_primary_id": GAMMA if is_gamma else PROTON,
    }


def ellipse_model(shower: dict, tel: dict, rng: np.random.Generator) -> dict:
    """Hillas-like ellipse (deg in the camera FoV) and intensity for one telescope."""
    dx, dy = tel["position"][0] - shower["core_x"], tel["position"][1] - shower["core_y"]
    impact = np.hypot(dx, dy)
    gamma = shower["shower_primary_id"] == GAMMA
    src_x = np.rad2deg(shower["alt"] - np.deg2rad(POINTING_ALT_DEG))
    src_y = np.rad2deg((shower["az"] - np.deg2rad(POINTING_AZ_DEG) + np.pi) % (2 * np.pi) - np.pi)
    direction = np.arctan2(dy, dx)
    if not gamma:
        direction += rng.normal(0, 0.6)
    dist = 0.2 + impact / 150.0
    log_e = np.log10(shower["energy"])
    return {
        "cog_x": src_x + dist * np.cos(direction), "cog_y": src_y + dist * np.sin(direction),
        "psi": direction,
        "length": (0.12 + 0.05 * log_e + 0.05 * rng.random()) * (1.0 if gamma else 1.8),
        "width": (0.04 + 0.01 * rng.random()) * (1.0 if gamma else 2.5),
        "intensity": 2000.0 * shower["energy"] * np.exp(-impact / 180.0) * (0.5 if not gamma else 1),
    }


def camera_extent(tel: dict) -> tuple[float, float]:
    """(angular radius in deg: the farthest pixel centre, fraction of that disc the pixels cover)."""
    cam = tel["camera"]
    radius = float(np.hypot(cam["pix_x"], cam["pix_y"]).max())
    fill = min(1.0, float(np.sum(cam["pix_area"])) / (np.pi * radius**2))
    return float(np.rad2deg(radius / tel["optics"]["focal_length"])), fill


def triggers(ell: dict, extent: tuple[float, float]) -> bool:
    """Enough light on the pixels: the telescope is read out (decided without rendering them).

    The light on the pixels is the image intensity, times the part of the ellipse within the camera
    radius along its major axis, times the pixels' fill factor.
    """
    radius, fill = extent
    distance = math.hypot(ell["cog_x"], ell["cog_y"])
    inside = 0.5 * math.erfc((distance - radius) / (math.sqrt(2.0) * ell["length"]))
    return ell["intensity"] * inside * fill >= TRIGGER_PE


def draw_event(seed: int, index: int, subarray: Mapping, gamma_fraction: float = 0.5,
               obs_id: int = 1) -> dict:
    """Event ``index`` before rendering: truth, pointing, and the ellipse of each triggered telescope.

    Redraws the shower (same generator) until at least one telescope triggers.
    """
    rng = np.random.default_rng((seed, index))
    is_gamma = rng.random() < gamma_fraction
    extents = {tel_id: camera_extent(tel) for tel_id, tel in subarray["tels"].items()}
    for attempt in range(1, 1001):
        shower = draw_shower(rng, is_gamma)
        shower["n_thrown"] = attempt  # showers drawn for this event (stages.io.toy_simconfig)
        tels = {}
        for tel_id, tel in subarray["tels"].items():
            ell = {k: float(v) for k, v in ellipse_model(shower, tel, rng).items()}
            if triggers(ell, extents[tel_id]):
                tels[tel_id] = {"toy_ellipse": ell}
        if tels:
            break
    return {
        "obs_id": obs_id, "event_id": index + 1,
        "pointing": {"alt": float(np.deg2rad(POINTING_ALT_DEG)),
                     "az": float(np.deg2rad(POINTING_AZ_DEG))},
        "simulation": shower,
        "tels": tels,
        "toy_seed": [seed, index],
    }


def render_image(ell: dict, tel: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Poisson photo-electron counts per pixel and the pulse peak time (ns) per pixel."""
    cam, focal = tel["camera"], tel["optics"]["focal_length"]
    x = np.rad2deg(cam["pix_x"] / focal) - ell["cog_x"]
    y = np.rad2deg(cam["pix_y"] / focal) - ell["cog_y"]
    c, s = np.cos(ell["psi"]), np.sin(ell["psi"])
    along, across = x * c + y * s, -x * s + y * c
    pix_area_deg2 = cam["pix_area"] * np.rad2deg(1.0 / focal) ** 2
    density = np.exp(-0.5 * ((along / ell["length"]) ** 2 + (across / ell["width"]) ** 2))
    density /= 2 * np.pi * ell["length"] * ell["width"]
    counts = rng.poisson(np.clip(ell["intensity"] * density * pix_area_deg2, 0, 1e7))
    n_samples = tel["n_samples"]
    peak_time = n_samples / SAMPLING_RATE_GHZ / 2 + 8.0 * along + rng.normal(0, 0.3, len(x))
    return counts.astype(np.int32), np.clip(peak_time, 2.0, n_samples - 3.0)


def render_waveform(charge: np.ndarray, peak_time: np.ndarray, n_samples: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(1, n_pix, n_samples) float32 Gaussian pulses whose sum over samples equals ``charge``."""
    wave = rng.standard_normal((len(charge), n_samples), dtype=np.float32)
    wave *= np.float32(0.3)
    lit = np.flatnonzero(charge)  # pulses only where there is light: most pixels hold noise only
    if lit.size:
        t = np.arange(n_samples, dtype=np.float32) / np.float32(SAMPLING_RATE_GHZ)
        pulse = np.exp(-0.5 * ((t[None, :] - peak_time[lit, None].astype(np.float32))
                               / np.float32(PULSE_SIGMA_NS)) ** 2)
        pulse /= pulse.sum(axis=1, keepdims=True)
        wave[lit] += charge[lit, None].astype(np.float32) * pulse
    return wave[None]


def render_telescope(ell: Mapping, tel: dict, rng: np.random.Generator,
                     with_waveforms: bool = True) -> dict:
    """The telescope event of one ellipse: true image, then waveform (or image and peak time)."""
    counts, peak_time = render_image(ell, tel, rng)
    tel_event = {"true_image": counts}
    if with_waveforms:
        tel_event["waveform"] = render_waveform(counts, peak_time, tel["n_samples"], rng)
        tel_event["selected_gain_channel"] = np.zeros(len(counts), dtype=np.int8)
    else:
        noise = rng.normal(0, 1.0, len(counts))
        tel_event["image"] = (counts + noise).astype(np.float32)
        tel_event["peak_time"] = peak_time.astype(np.float32)
    return tel_event


def render_event(event: Mapping, subarray: Mapping, with_waveforms: bool = True) -> dict:
    """A drawn event (`draw_event`) with its cameras rendered; ``toy_*`` fields are consumed.

    Telescope ``t`` of event ``(seed, index)`` uses ``default_rng((seed, index, t))``, so the
    result depends on the drawn event only, not on which worker renders it or when.
    """
    if "toy_seed" not in event:
        raise ValueError(f"event {event.get('obs_id')}:{event.get('event_id')} has no toy_seed: "
                         "ToyRenderer renders events of ToyEventSource(render=false)")
    seed, index = (int(v) for v in event["toy_seed"])
    tels = {}
    for tel_id, data in event["tels"].items():
        rng = np.random.default_rng((seed, index, int(tel_id)))
        tels[tel_id] = render_telescope(data["toy_ellipse"], subarray["tels"][tel_id], rng,
                                        with_waveforms)
    return {**{k: v for k, v in event.items() if k not in ("tels", "toy_seed")}, "tels": tels}


class ToyEventSource(Producer):
    """Unlimited synthetic gamma/proton events on a toy array (deterministic per seed and index)."""

    replayable = True
    n_events = Param(int, 1000, "number of events (0 = unlimited)", min=0)
    seed = Param(int, 0, "random seed; event i uses default_rng((seed, i))")
    n_tels = Param(int, 4, "number of telescopes")
    camera = Param(str, "hex", "camera kind", choices=("hex", "square", "mixed"))
    gamma_fraction = Param(float, 0.5, "fraction of gamma showers (the rest are protons)")
    with_waveforms = Param(bool, True, "emit R1 waveforms; false fills image/peak_time directly")
    n_samples = Param(int, 40, "samples per waveform (1 GHz)")
    rate_hz = Param(float, 0.0, "events per second (0 = as fast as possible)")
    obs_id = Param(int, 1, "observation id of the generated run")
    render = Param(bool, True, "render images here; false: yield drawn showers for a ToyRenderer")

    def setup(self) -> None:
        self._subarray = toy_subarray(self.n_tels, self.camera, self.n_samples)

    def publish_context(self) -> dict:
        return {"subarray": toy_subarray(self.n_tels, self.camera, self.n_samples),
                "provenance": {"input_files": [], "generator": f"ToyEventSource seed={self.seed}"},
                "simulation": simulation_context(self.obs_id, np.deg2rad(POINTING_ALT_DEG),
                                                 np.deg2rad(POINTING_AZ_DEG),
                                                 self.gamma_fraction < 1, 2000.0)}

    def total(self) -> int | None:
        return self.n_events or None

    def process(self) -> Iterator[Keyed]:
        return self.resume(0)

    def resume(self, first: int) -> Iterator[Keyed]:
        """The events from index ``first`` on (each is a function of its index: this seeks)."""
        if not hasattr(self, "_subarray"):
            self.setup()
        index, start = first, time.monotonic()
        while self.n_events == 0 or index < self.n_events:
            if self.rate_hz > 0:
                delay = start + (index - first) / self.rate_hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event = self.make_event(index)
            yield Keyed(f"{event['obs_id']}:{event['event_id']}", event)
            index += 1

    def make_event(self, index: int) -> dict:
        """Event ``index`` of this run (rendered unless ``render`` is false), the same every time."""
        event = draw_event(self.seed, index, self._subarray, self.gamma_fraction, self.obs_id)
        return render_event(event, self._subarray, self.with_waveforms) if self.render else event


class ToyRenderer(Stager):
    """Renders the drawn events of ``ToyEventSource(render=false)``: images and waveforms."""

    with_waveforms = Param(bool, True, "emit R1 waveforms; false fills image/peak_time directly")

    def process(self, event: dict) -> dict:
        return render_event(event, self.context["subarray"], self.with_waveforms)
