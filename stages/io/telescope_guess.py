"""ctapipe's telescope guess table (``ctapipe.instrument.guess``, 0.28), as data: no ctapipe needed.

Files without telescope metadata (``OPTICS_CONFIG_NAME``, ``CAMERA_CONFIG_NAME``: CTA prod3 and
prod4 simulations, e.g. the SST-1M test file) name their telescopes from the camera's number of
pixels and the equivalent focal length, as ctapipe's ``SimTelEventSource`` does. Importing ctapipe
for this table alone cost a second of every such run's start-up, and without ctapipe the names
were unknown; `tests/test_stages_telescope_guess.py` checks the table against ctapipe's.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Guess", "TELESCOPES", "guess_telescope"]

_SC, _DC, _H, _P = "SCHWARZSCHILD_COUDER", "DAVIES_COTTON", "HYBRID", "PARABOLIC"


class Guess(NamedTuple):
    """ctapipe's ``GuessingResult`` (``reflector_shape`` as the name of its enum member)."""

    type: str
    name: str
    camera_name: str
    n_mirrors: int
    reflector_shape: str


# ((n_pixels, focal length in m, n_mirror_tiles or None), Guess), in ctapipe's order
TELESCOPES: tuple[tuple[tuple[int, float, int | None], Guess], ...] = (
    ((2048, 2.28, None), Guess("SST", "GCT", "CHEC", 2, _SC)),
    ((2368, 2.15, None), Guess("SST", "ASTRI", "ASTRICam", 2, _SC)),
    ((2048, 2.15, None), Guess("SST", "ASTRI", "CHEC", 2, _SC)),
    ((1296, 5.60, None), Guess("SST", "1M", "DigiCam", 1, _DC)),
    ((1764, 16.0, None), Guess("MST", "MST", "FlashCam", 1, _H)),
    ((1855, 16.0, None), Guess("MST", "MST", "NectarCam", 1, _H)),
    ((1855, 28.0, None), Guess("LST", "LST", "LSTCam", 1, _P)),
    ((11328, 5.59, None), Guess("MST", "SCT", "SCTCam", 1, _SC)),
    ((1039, 16.97, 964), Guess("LST", "MAGIC-1", "MAGICCam", 1, _P)),
    ((1039, 16.97, 247), Guess("LST", "MAGIC-2", "MAGICCam", 1, _P)),
    ((1039, 17.0, 964), Guess("LST", "MAGIC-1", "MAGICCam", 1, _P)),
    ((1039, 17.0, 247), Guess("LST", "MAGIC-2", "MAGICCam", 1, _P)),
    ((960, 15.0, None), Guess("MST", "HESS-I", "HESS-I", 1, _DC)),
    ((2048, 36.0, None), Guess("LST", "HESS-II", "HESS-II", 1, _P)),
    ((1440, 4.89, None), Guess("SST", "FACT", "FACT", 1, _H)),
)
_LOOKUP = {key: guess for key, guess in TELESCOPES}


def guess_telescope(n_pixels: int, focal_length_m: float,
                    n_mirror_tiles: int | None = None) -> Guess | None:
    """ctapipe's ``guess_telescope``: the focal length rounded to cm, the entry with these mirror
    tiles first, else the one that needs none; None where ctapipe raises (an unknown telescope)."""
    focal = round(float(focal_length_m), 2)
    return (_LOOKUP.get((int(n_pixels), focal, n_mirror_tiles))
            or _LOOKUP.get((int(n_pixels), focal, None)))
