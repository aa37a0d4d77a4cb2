"""Timing parameters: ctapipe's least-trimmed-squares (LTS) line fit of peak time vs position.

Contract: `lts_timing` takes the *selected* pixels' longitudinal coordinate (deg, along the Hillas
major axis) and peak time (ns) as float64 arrays and returns ``(slope, intercept, deviation)`` as a
float64 array (NaN where ctapipe gives NaN), like ``ctapipe.image.timing_parameters``:
``samples`` random starts of two points, then C-steps refitting the ``fraction`` of points with the
smallest squared residuals until the residual sum of squares changes by less than ``eps``.

Random starts: ctapipe draws ``rng.integers(0, n)`` and ``rng.integers(0, n - 1)`` from a numpy
PCG64 ``Generator``. Passing a Generator into a numba function costs more than the whole fit, so the
fit reads a fixed stream of the generator's 32-bit outputs instead (`lts_draws`, a fresh generator
seeded with ``LTS_SEED``) and applies numpy's bounded-integer algorithm (Lemire's rejection) to it:
the same starts as a generator reset to that seed for every image, and no generator object.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LTS_SEED = 0
N_DRAWS = 256  # 32-bit outputs kept; an image needs 2 per start (more only on rare rejections)


def lts_draws(seed: int = LTS_SEED, count: int = N_DRAWS) -> np.ndarray:
    """The first ``count`` outputs of ``default_rng(seed)``'s ``next_uint32`` (uint64 array).

    numpy's PCG64 serves 32-bit requests from its 64-bit outputs, low half first, then high half.
    """
    raw = np.random.default_rng(seed).bit_generator.random_raw((count + 1) // 2)
    halves = np.empty((len(raw), 2), dtype=np.uint64)
    halves[:, 0], halves[:, 1] = raw & np.uint64(0xFFFFFFFF), raw >> np.uint64(32)
    return halves.ravel()[:count].copy()


LTS_DRAWS = lts_draws()


@njit(cache=True)
def bounded_draw(draws, cursor, high):
    """(value in [0, high), next cursor): numpy's ``integers(0, high)`` on the uint32 stream."""
    span = np.uint64(high - 1)
    if span == 0:  # numpy returns low without drawing
        return 0, cursor
    excl = span + np.uint64(1)
    if cursor + 64 > len(draws):  # 2 draws per start unless rejected (p ~ high / 2**32 each)
        raise IndexError("LTS draw stream exhausted")
    m = draws[cursor] * excl
    cursor += 1
    leftover = m & np.uint64(0xFFFFFFFF)
    if leftover < excl:
        threshold = (np.uint64(0xFFFFFFFF) - span) % excl
        while leftover < threshold:
            m = draws[cursor] * excl
            cursor += 1
            leftover = m & np.uint64(0xFFFFFFFF)
    return np.int64(m >> np.uint64(32)), cursor


@njit(cache=True)
def fit_line_fast(x, y, idx, n_idx):
    """Closed-form least squares (slope, intercept, rss) on ``idx[:n_idx]``; NaN if degenerate."""
    sx, sy, sxx, sxy = 0.0, 0.0, 0.0, 0.0
    for k in range(n_idx):
        i = idx[k]
        sx += x[i]
        sy += y[i]
        sxx += x[i] * x[i]
        sxy += x[i] * y[i]
    det = sxx * n_idx - sx * sx
    if det < 2 * np.finfo(np.float64).eps:
        return np.nan, np.nan, np.nan
    slope, intercept = (n_idx * sxy - sx * sy) / det, (sxx * sy - sx * sxy) / det
    rss = 0.0
    for k in range(n_idx):
        i = idx[k]
        rss += (y[i] - (x[i] * slope + intercept)) ** 2
    return slope, intercept, rss


@njit(cache=True)
def fit_line_exact(design, y, idx):
    """Least squares (slope, intercept, rss) on rows ``idx``; NaN if det(XᵀX) < 2 eps.

    Written with the same matrix operations as ctapipe.fitting.linear_regression on purpose: with
    3 points the LTS refits pairs, the residual sums are pure rounding noise, and the LTS picks
    its best start by them; only bit-identical arithmetic reproduces ctapipe's choice. With more
    points `fit_line_fast` (closed form, ~10x faster) agrees to rounding.
    """
    X, yy = design[idx], y[idx]
    mat = X.T @ X
    if np.linalg.det(mat) < 2 * np.finfo(np.float64).eps:
        return np.nan, np.nan, np.nan
    beta = np.linalg.inv(mat) @ X.T @ yy
    rss = np.sum((yy - (X[:, 0] * beta[0] + beta[1])) ** 2)
    return beta[0], beta[1], rss


@njit(cache=True)
def kth_smallest(values, k):
    """The ``k``-th smallest (0-based) of ``values``, reordering them (Hoare quickselect)."""
    lo, hi = 0, len(values) - 1
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] < pivot:
                i += 1
            while values[j] > pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return values[k]


@njit(cache=True)
def smallest(values, size, out, scratch):
    """Indices of the ``size`` smallest ``values`` into ``out`` (partial selection); False if
    ties (or NaN) at the threshold make the choice depend on a sort order (``out`` then unset).

    ``scratch`` is work space like ``values``.
    """
    scratch[:] = values
    threshold = kth_smallest(scratch, size - 1)
    n_less, n_equal = 0, 0
    for i in range(len(values)):
        if values[i] < threshold:
            out[n_less] = i
            n_less += 1
        elif values[i] == threshold:
            n_equal += 1
    if n_less + n_equal != size:
        return False
    for i in range(len(values)):
        if values[i] == threshold:
            out[n_less] = i
            n_less += 1
    return True


@njit(cache=True)
def _c_steps_fast(x, y, slope, intercept, error, size, max_iterations, eps):
    """C-steps with the closed-form fit and partial selection; (slope, intercept, error)."""
    n = len(x)
    squared, scratch = np.empty(n), np.empty(n)
    subset = np.empty(size, dtype=np.int64)
    for _ in range(max_iterations):
        for i in range(n):
            squared[i] = (y[i] - (x[i] * slope + intercept)) ** 2
        if not smallest(squared, size, subset, scratch):  # ties: ctapipe's sort order decides
            subset[:] = np.argsort(squared)[:size]
        slope, intercept, new_error = fit_line_fast(x, y, subset, size)
        converged = abs(error - new_error) < eps
        error = new_error
        if converged:  # a NaN fit does not stop ctapipe: it refits from NaN residuals
            break
    return slope, intercept, error


@njit(cache=True)
def _fit_exact_memo(design, y, idx, memo):
    """`fit_line_exact` of the 1 or 2 ordered rows ``idx``, each subset computed once.

    ``memo[first, second or 3]`` holds (done, slope, intercept, rss): with <= 3 points the starts
    and C-steps keep refitting the same few subsets, and each matrix fit costs microseconds.
    """
    row = memo[idx[0], idx[1] if len(idx) > 1 else 3]
    if row[0] == 0.0:
        row[1], row[2], row[3] = fit_line_exact(design, y, idx)
        row[0] = 1.0
    return row[1], row[2], row[3]


@njit(cache=True)
def _c_steps_exact(design, x, y, slope, intercept, error, size, max_iterations, eps, memo):
    """C-steps as ctapipe writes them (argsort, matrix fit), for <= 3 points."""
    for _ in range(max_iterations):
        subset = np.argsort((y - (x * slope + intercept)) ** 2)[:size]
        slope, intercept, new_error = _fit_exact_memo(design, y, subset, memo)
        converged = abs(error - new_error) < eps
        error = new_error
        if converged:  # a NaN fit does not stop ctapipe: it refits from NaN residuals
            break
    return slope, intercept, error


@njit(cache=True)
def lts_timing(longi, peak_time, draws, samples=5, fraction=0.85, max_iterations=20, eps=1e-12):
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
    memo = np.zeros((3, 4, 4)) if exact else np.zeros((0, 0, 4))
    best_slope, best_intercept, best_error = np.nan, np.nan, np.inf
    pair = np.empty(2, dtype=np.int64)
    cursor = 0
    for _ in range(samples):
        pair[0], cursor = bounded_draw(draws, cursor, n)
        pair[1], cursor = bounded_draw(draws, cursor, n - 1)
        if pair[1] >= pair[0]:
            pair[1] += 1
        if exact:
            slope, intercept, error = _fit_exact_memo(design, y, pair, memo)
        else:
            slope, intercept, error = fit_line_fast(x, y, pair, 2)
        if np.isnan(slope):
            continue
        if exact:
            slope, intercept, error = _c_steps_exact(design, x, y, slope, intercept, error, size,
                                                     max_iterations, eps, memo)
        else:
            slope, intercept, error = _c_steps_fast(x, y, slope, intercept, error, size,
                                                    max_iterations, eps)
        if error < best_error:
            best_slope, best_intercept, best_error = slope, intercept, error
    deviation = np.sqrt(np.mean((longi * best_slope + best_intercept - peak_time) ** 2))
    return np.array([best_slope, best_intercept, deviation])
