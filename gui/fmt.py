"""Number formatting shared by the monitor's widgets (short, aligned, never raising on None)."""

from __future__ import annotations


def fmt_count(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(n) >= limit:
            return f"{n / (limit if suffix != 'k' else 1e3):.1f}{suffix}"
    return f"{n:.0f}"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "–"
    if r >= 1000:
        return f"{r / 1000:.1f}k ev/s"
    return f"{r:.1f} ev/s" if r < 100 else f"{r:.0f} ev/s"


def fmt_duration(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "–"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "–"
    b = float(b)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(b) < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GB"
