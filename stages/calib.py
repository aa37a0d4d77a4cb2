"""Waveform calibration, gain selection and charge extraction, as ctapipe's CameraCalibrator.

Contract: every function works on one telescope's plain arrays and returns new arrays (inputs are
never modified; they may be read-only views of received frames). Waveforms are
``(n_gains, n_pix, n_samples)``; after gain selection ``n_gains == 1`` and
``selected_gain_channel`` (int8, ``(n_pix,)``) says which gain each pixel kept. Extraction returns
``image`` (float32 p.e., ``(n_pix,)``) and ``peak_time`` (float32 ns, ``(n_pix,)``).

- `select_gain_threshold`: ctapipe's ThresholdGainSelector (low gain where a high-gain R0 sample
  exceeds the threshold).
- `calibrate_r0`: R0 ADC counts to R1 (pedestal per sample subtracted, times dc_to_pe), then gain
  selection, exactly as ctapipe's SimTelEventSource produces ``event.r1`` waveforms.
- `extract_charge`: LocalPeakWindowSum / NeighborPeakWindowSum (ctapipe defaults: width 7, shift 3,
  local weight 0 for neighbours) with the integration correction from the reference pulse.
- `single_sample_image`: a one-sample waveform (ADC sums) is the image, peak_time 0 (ctapipe).
- `interpolate_invalid`: ctapipe's NeighborAverage invalid-pixel handler.

`ChargeExtraction` is the step: event ``tels[tid]["waveform"]`` -> ``image``, ``peak_time``. The
telescope's calibration (time shift, outlier mask) is ``context["calibration"][tid]``, or the
event's own ``tels[tid]["calibration"]`` when a source found it after publishing the context.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from flow.graph.params import Param
from flow.graph.step import Stager

EXTRACTORS = ("NeighborPeakWindowSum", "LocalPeakWindowSum")


def select_gain_threshold(r0_waveforms: np.ndarray, threshold: float = 4000.0) -> np.ndarray:
    """Per pixel 1 (low gain) if any high-gain sample is above ``threshold``, else 0 (int8)."""
    if r0_waveforms.shape[0] == 1:
        return np.zeros(r0_waveforms.shape[1], dtype=np.int8)
    return (r0_waveforms[0] > threshold).any(axis=1).astype(np.int8)


def calibrate_r0(r0_waveforms, pedestal_per_sample, dc_to_pe, gain_threshold=4000.0):
    """R0 counts -> (gain-selected R1 waveforms float32 (1, n_pix, n_s), selected_gain_channel).

    ``(r0 - pedestal) * dc_to_pe`` per gain and pixel, then threshold gain selection on the R0
    high gain (ctapipe ``apply_simtel_r1_calibration`` with ThresholdGainSelector).
    """
    n_pix = r0_waveforms.shape[1]
    ped = np.asarray(pedestal_per_sample, dtype=np.float32)[..., np.newaxis]
    gain = np.asarray(dc_to_pe, dtype=np.float32)[..., np.newaxis]
    r1 = ((r0_waveforms - ped) * gain).astype(np.float32)
    selected = select_gain_threshold(r0_waveforms, gain_threshold)
    return r1[np.newaxis, selected, np.arange(n_pix)], selected


def integration_correction(reference_pulse_shape, reference_pulse_sample_width_ns,
                           sample_width_ns, window_width, window_shift) -> np.ndarray:
    """Per gain: 1 / (fraction of a unit reference pulse inside the window) (ctapipe's formula)."""
    pulses = np.atleast_2d(np.asarray(reference_pulse_shape, dtype=np.float64))
    correction = np.ones(len(pulses), dtype=np.float64)
    for channel, pulse in enumerate(pulses):
        pulse_max = pulse.size * reference_pulse_sample_width_ns
        pulse_x = np.arange(0, pulse_max, reference_pulse_sample_width_ns)
        edges = np.arange(0, pulse_max, sample_width_ns)
        sampled, _ = np.histogram(pulse_x, edges, weights=pulse, density=True)
        start = max(int(sampled.argmax()) - window_shift, 0)
        end = min(start + window_width, sampled.size)
        if start < end:
            correction[channel] = 1.0 / np.sum(sampled[start:end] * sample_width_ns)
    return correction


@njit(cache=True)
def local_peak_index(waveforms):
    """Index of each pixel's waveform maximum. ``waveforms`` (n_pix, n_samples)."""
    n_pix = waveforms.shape[0]
    out = np.empty(n_pix, dtype=np.int64)
    for pix in range(n_pix):
        out[pix] = np.argmax(waveforms[pix])
    return out


@njit(cache=True)
def neighbor_peak_index(waveforms, indptr, indices, local_weight, broken):
    """Peak of the summed neighbour waveforms (+ local_weight x own), broken neighbours skipped."""
    n_pix, n_samples = waveforms.shape
    out = np.empty(n_pix, dtype=np.int64)
    average = np.empty(n_samples, dtype=np.float64)
    for pix in range(n_pix):
        for s in range(n_samples):
            average[s] = np.float64(waveforms[pix, s]) * local_weight
        for k in range(indptr[pix], indptr[pix + 1]):
            neighbor = indices[k]
            if broken[neighbor]:
                continue
            for s in range(n_samples):
                average[s] += waveforms[neighbor, s]
        out[pix] = np.argmax(average)
    return out


@njit(cache=True)
def extract_around_peak(waveforms, peak_index, width, shift, sampling_rate_ghz, correction):
    """Window sum (times ``correction[pix]``) and positive-sample weighted mean time (ns)."""
    n_pix, n_samples = waveforms.shape
    charge = np.empty(n_pix, dtype=np.float32)
    peak_time = np.empty(n_pix, dtype=np.float32)
    for pix in range(n_pix):
        start = max(0, peak_index[pix] - shift)
        end = min(peak_index[pix] - shift + width, n_samples)
        total, num, den = 0.0, 0.0, 0.0
        for s in range(start, end):
            value = np.float64(waveforms[pix, s])
            total += value
            if value > 0:
                num += value * s
                den += value
        time = num / den if den > 0 else np.float64(peak_index[pix])
        # ctapipe stores the time in float32 before dividing by the rate: round twice like it
        peak_time[pix] = np.float32(np.float32(time) / sampling_rate_ghz)
        charge[pix] = np.float32(np.float32(total) * correction[pix])
    return charge, peak_time


def extract_charge(waveforms, selected_gain_channel, sampling_rate_ghz, correction,
                   method="NeighborPeakWindowSum", window_width=7, window_shift=3,
                   indptr=None, indices=None, local_weight=0, broken=None):
    """(image, peak_time) of a gain-selected waveform (1, n_pix, n_samples) or (n_pix, n_samples).

    ``correction`` is per gain (`integration_correction`, or ones); the pixel's selected gain picks
    its factor. ``broken`` (n_pix,) bool excludes pixels from the neighbour sum.
    """
    wf = waveforms[0] if waveforms.ndim == 3 else waveforms
    n_pix = wf.shape[0]
    gains = np.zeros(n_pix, dtype=np.intp) if selected_gain_channel is None else selected_gain_channel
    pix_correction = np.asarray(correction, dtype=np.float64)[gains]
    if method == "LocalPeakWindowSum":
        peak = local_peak_index(wf)
    elif method == "NeighborPeakWindowSum":
        broken = np.zeros(n_pix, dtype=np.bool_) if broken is None else broken
        peak = neighbor_peak_index(wf, indptr, indices, local_weight, broken)
    else:
        raise ValueError(f"unknown extractor {method!r}, expected one of {EXTRACTORS}")
    return extract_around_peak(wf, peak, window_width, window_shift,
                               float(sampling_rate_ghz), pix_correction)


def single_sample_image(waveforms):
    """(image, zero peak_time) of a one-sample waveform: the sample is the charge (ctapipe).

    ctapipe's CameraCalibrator takes a single sample (sim_telarray ADC sums, as ASTRICam writes)
    as the image itself: no window, no integration correction, no time shift, peak_time 0.
    """
    wf = waveforms[0] if waveforms.ndim == 3 else waveforms
    return wf[:, 0].astype(np.float32), np.zeros(wf.shape[0], dtype=np.float32)


def interpolate_invalid(image, peak_time, invalid, indptr, indices):
    """Replace invalid pixels by the mean of their valid neighbours (0 if none): NeighborAverage."""
    if not invalid.any():
        return image, peak_time
    image, peak_time = image.copy(), peak_time.copy()
    for pix in np.flatnonzero(invalid):
        neighbors = indices[indptr[pix]:indptr[pix + 1]]
        neighbors = neighbors[~invalid[neighbors]]
        n = len(neighbors)
        image[pix] = image[neighbors].sum() / n if n else 0.0
        peak_time[pix] = peak_time[neighbors].sum() / n if n else 0.0
    return image, peak_time


def _per_pixel(array, selected_gain_channel):
    """A (n_gains, n_pix) calibration array reduced to the selected gain per pixel."""
    array = np.asarray(array)
    if array.ndim == 1:
        return array
    if selected_gain_channel is None:
        return array[0]
    return array[selected_gain_channel, np.arange(array.shape[1])]


class ChargeExtraction(Stager):
    """Waveforms -> image and peak_time per telescope (ctapipe-process's CameraCalibrator)."""

    extractor = Param(str, "NeighborPeakWindowSum", "charge extractor", choices=EXTRACTORS)
    window_width = Param(int, 7, "integration window width in samples")
    window_shift = Param(int, 3, "window start = peak index - shift (samples)")
    local_weight = Param(int, 0, "NeighborPeakWindowSum: weight of the pixel's own waveform")
    apply_integration_correction = Param(bool, True, "correct for the pulse outside the window")
    gain_threshold = Param(float, 4000.0, "R0 input: high-gain ADC above which low gain is used")
    apply_time_shift = Param(bool, True, "subtract context calibration time_shift_ns")
    drop_waveform = Param(bool, True, "remove the waveform from the event after extraction")

    def setup(self) -> None:
        self._corrections: dict = {}
        wf = np.zeros((2, 3), dtype=np.float32)
        extract_charge(wf, None, 1.0, np.ones(1), "LocalPeakWindowSum", 2, 1)
        extract_charge(wf, None, 1.0, np.ones(1), "NeighborPeakWindowSum", 2, 1,
                       np.array([0, 1, 2], np.int32), np.array([1, 0], np.int32))

    def _correction(self, tel_id, tel) -> np.ndarray:
        if tel_id not in self._corrections:
            pulse = tel.get("reference_pulse_shape")
            if not self.apply_integration_correction or pulse is None:
                self._corrections[tel_id] = np.ones(max(int(tel.get("n_gains", 1)), 2))
            else:
                self._corrections[tel_id] = integration_correction(
                    pulse, float(tel["reference_pulse_sample_width_ns"]),
                    1.0 / float(tel["sampling_rate_ghz"]), self.window_width, self.window_shift)
        return self._corrections[tel_id]

    def calibrate_tel(self, tel_id: int, data: dict) -> None:
        """Fill ``image``/``peak_time`` of one telescope event from its ``waveform``."""
        tel = self.context["subarray"]["tels"][tel_id]
        calib = data.pop("calibration", None) or self.context.get("calibration", {}).get(tel_id, {})
        camera = tel["camera"]
        waveform = np.asarray(data["waveform"])
        selected = data.get("selected_gain_channel")
        if np.issubdtype(waveform.dtype, np.integer):
            waveform, selected = calibrate_r0(
                waveform, calib.get("pedestal_per_sample", 0.0), calib.get("dc_to_pe", 1.0),
                self.gain_threshold)
        elif waveform.shape[0] > 1 and selected is None:
            raise ValueError(f"tel {tel_id}: R1 waveform has {waveform.shape[0]} gains and no "
                             "selected_gain_channel; gain selection needs R0 counts")
        outliers = calib.get("outlier_mask")
        invalid = None if outliers is None else _per_pixel(outliers, selected).astype(bool)
        if waveform.shape[-1] == 1:  # one sample (ADC sums, e.g. ASTRICam): no extraction
            image, peak_time = single_sample_image(waveform)
        else:
            image, peak_time = extract_charge(
                waveform, selected, tel["sampling_rate_ghz"], self._correction(tel_id, tel),
                self.extractor, self.window_width, self.window_shift,
                camera["neighbors_indptr"], camera["neighbors_indices"], self.local_weight,
                invalid)
            if self.apply_time_shift and calib.get("time_shift_ns") is not None:
                peak_time -= _per_pixel(calib["time_shift_ns"], selected).astype(np.float32)
        if invalid is not None:
            image, peak_time = interpolate_invalid(image, peak_time, invalid,
                                                   camera["neighbors_indptr"],
                                                   camera["neighbors_indices"])
        data["image"], data["peak_time"] = image, peak_time
        if selected is not None:
            data["selected_gain_channel"] = np.asarray(selected, dtype=np.int8)
        if self.drop_waveform:
            del data["waveform"]

    def process(self, event: dict) -> dict:
        for tel_id, data in event.get("tels", {}).items():
            if "waveform" in data:
                self.calibrate_tel(tel_id, data)
        return event
