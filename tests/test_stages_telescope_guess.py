"""stages.io.telescope_guess: ctapipe's telescope guess table, without importing ctapipe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stages.io.telescope_guess import TELESCOPES, guess_telescope


def test_the_table_is_ctapipes():
    guess = pytest.importorskip("ctapipe.instrument.guess")
    theirs = [((k.n_pixels, k.focal_length, k.n_mirror_tiles),
               (v.type, v.name, v.camera_name, v.n_mirrors, v.reflector_shape.name))
              for k, v in guess.TELESCOPE_NAMES]
    assert [(key, tuple(g)) for key, g in TELESCOPES] == theirs


@pytest.mark.parametrize("n_pixels,focal,tiles", [(1296, 5.6, 18), (1296, 5.6049, None),
                                                  (1039, 16.97, 247), (1039, 16.97, 964),
                                                  (1855, 28.0, 198), (1855, 16.0, 86),
                                                  (1039, 16.97, 5), (1234, 5.6, None)])
def test_guesses_equal_ctapipes(n_pixels, focal, tiles):
    guess = pytest.importorskip("ctapipe.instrument.guess")
    mine = guess_telescope(n_pixels, focal, tiles)
    try:
        theirs = guess.guess_telescope(n_pixels, focal, tiles)
    except ValueError:   # ctapipe: an unknown telescope
        assert mine is None
        return
    assert (mine.name, mine.camera_name, mine.type, mine.n_mirrors, mine.reflector_shape) == (
        theirs.name, theirs.camera_name, theirs.type, theirs.n_mirrors, theirs.reflector_shape.name)


def test_naming_a_prod4_telescope_imports_no_ctapipe():
    code = ("import sys; from stages.io.simtel import telescope_names; "
            "print(telescope_names({}, 1296, 5.6, 18), 'ctapipe' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["('1M',", "'DigiCam')", "False"]
