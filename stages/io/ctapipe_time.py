"""CTAO high-resolution timestamps (``ctao_high_res``: uint32 TAI seconds since 1970, quarter ns).

The same conversion as ``ctapipe.time.time_to_ctao_high_res``, with astropy only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DAY_TO_S = 86400
S_TO_QNS = 4e9
NS_PER_DAY = 86400e9
MAX_UINT32 = np.iinfo(np.uint32).max


@lru_cache(maxsize=1)
def _epoch():
    from astropy.time import Time

    return Time(0, format="unix_tai", scale="tai")


def time_to_ctao_high_res(time) -> np.ndarray:
    """uint32 (..., 2): whole TAI seconds since 1970-01-01 TAI and quarter nanoseconds."""
    epoch = _epoch()
    tai = time.tai
    frac1, sec1 = np.modf((tai.jd1 - epoch.jd1) * DAY_TO_S)
    frac2, sec2 = np.modf((tai.jd2 - epoch.jd2) * DAY_TO_S)
    out = np.empty(np.shape(tai.jd1) + (2,), np.uint32)
    out[..., 0] = np.asanyarray(np.clip(sec1 + sec2, 0, MAX_UINT32), dtype=np.uint32)
    out[..., 1] = np.asanyarray(np.clip(0, np.round((frac1 + frac2) * S_TO_QNS), None),
                                dtype=np.uint32)
    return out


def unix_to_ctao_high_res(seconds: int, nanoseconds: int) -> np.ndarray:
    """A sim_telarray (unix s, ns) UTC time as ctapipe stores it."""
    from astropy.time import Time

    return time_to_ctao_high_res(Time(seconds, nanoseconds * 1e-9, format="unix", scale="utc"))


def ns_after(central: tuple[int, int], offset_ns) -> np.ndarray:
    """Telescopes' trigger times: ``offset_ns`` (a number, or an array: one astropy `Time` for
    all of an event's telescopes, element by element the same) after the central trigger
    (ctapipe's recipe)."""
    from astropy.time import Time

    t = Time(central[0], central[1] * 1e-9, format="unix", scale="utc")
    t = Time(t.jd1, t.jd2 + np.asarray(offset_ns, np.float64) / NS_PER_DAY, scale=t.scale,
             format="jd")
    return time_to_ctao_high_res(t)
