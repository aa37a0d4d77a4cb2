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


def trigger_times(triggers: dict) -> dict:
    """{event id: (central time, {tel_id: telescope time})} of a sim_telarray run's trigger records
    (`stages.io.simtel_meta`: ``gps_time``, ``tels``, ``times_ns``), each as ctapipe stores it.

    Two astropy `Time` arrays for the whole run instead of two per event (about a millisecond of
    the writer's time per event): element by element the same values as `unix_to_ctao_high_res`
    and `ns_after`."""
    from astropy.time import Time

    ids = list(triggers)
    if not ids:
        return {}
    secs = np.array([triggers[i]["gps_time"][0] for i in ids], np.int64)
    nsec = np.array([triggers[i]["gps_time"][1] for i in ids], np.int64)
    central = Time(secs, nsec * 1e-9, format="unix", scale="utc")
    counts = [min(len(triggers[i]["tels"]), len(triggers[i]["times_ns"])) for i in ids]
    offsets = np.array([t for i, n in zip(ids, counts, strict=True)
                        for t in triggers[i]["times_ns"][:n]], np.float64)
    index = np.repeat(np.arange(len(ids)), counts)
    tel = Time(central.jd1[index], central.jd2[index] + offsets / NS_PER_DAY, scale=central.scale,
               format="jd")
    central_hr = time_to_ctao_high_res(central)
    tel_hr = time_to_ctao_high_res(tel) if len(index) else np.empty((0, 2), np.uint32)
    out, start = {}, 0
    for k, (event_id, n) in enumerate(zip(ids, counts, strict=True)):
        tels = triggers[event_id]["tels"][:n]
        out[event_id] = (central_hr[k], dict(zip(tels, tel_hr[start:start + n], strict=True)))
        start += n
    return out
