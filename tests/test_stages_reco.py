"""stages.quality + stages.reco against ctapipe's ShowerProcessor (HillasReconstructor) on real data.

Two comparisons per file: (1) the same inputs — ctapipe's own DL1 parameters fed to our
reconstruction; (2) the whole chain — our cleaning, parameters, quality cuts and reconstruction
from ctapipe's calibrated images — against ImageProcessor + ShowerProcessor.
"""

import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_stages_calib import FILES, context_from_subarray, read_events  # noqa: E402

from stages.cleaning import TailcutsCleaning  # noqa: E402
from stages.image import ImageParameters  # noqa: E402
from stages.quality import QualityCuts, passes_stereo_quality  # noqa: E402
from stages.reco import HillasReconstruction, altaz_to_telescope_matrix  # noqa: E402

N_EVENTS = {"prod3": 12, "sst1m": 20}


@pytest.fixture(scope="module", params=list(FILES))
def processed(request):
    """(subarray, ctapipe-processed events): ImageProcessor + ShowerProcessor defaults."""
    from ctapipe.image import ImageProcessor
    from ctapipe.reco import ShowerProcessor

    subarray, events = read_events(request.param, N_EVENTS[request.param])
    images, showers = ImageProcessor(subarray), ShowerProcessor(subarray)
    out = []
    for event in map(copy.deepcopy, events):
        images(event)
        showers(event)
        out.append(event)
    return subarray, out


def ctapipe_params(dl1) -> dict:
    p = dl1.parameters
    return {"hillas_fov_lon": p.hillas.fov_lon.to_value("deg"),
            "hillas_fov_lat": p.hillas.fov_lat.to_value("deg"),
            "hillas_psi": p.hillas.psi.to_value("deg"), "hillas_intensity": p.hillas.intensity,
            "hillas_length": p.hillas.length.to_value("deg"),
            "hillas_width": p.hillas.width.to_value("deg"),
            "morphology_n_pixels": p.morphology.n_pixels}


def pointing(event) -> dict:
    return {"alt": event.monitoring.pointing.array_altitude.to_value("rad"),
            "az": event.monitoring.pointing.array_azimuth.to_value("rad")}


def tel_pointing(event, tel_id) -> dict:
    p = event.monitoring.tel[tel_id].pointing
    return {"alt": p.altitude.to_value("rad"), "az": p.azimuth.to_value("rad")}


def angular_separation_deg(alt1, az1, alt2, az2):
    a1, z1, a2, z2 = np.deg2rad([alt1, az1, alt2, az2])
    cos = np.sin(a1) * np.sin(a2) + np.cos(a1) * np.cos(a2) * np.cos(z1 - z2)
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1)))


def check_against_ctapipe(ours: dict, event, stats: dict):
    ref = event.dl2.stereo.geometry["HillasReconstructor"]
    assert bool(ours["is_valid"]) == bool(ref.is_valid), event.index.event_id
    if not ref.is_valid:
        return
    assert list(ours["telescopes"]) == list(ref.telescopes)
    sep = angular_separation_deg(ours["alt"], ours["az"], ref.alt.to_value("deg"),
                                 ref.az.to_value("deg"))
    d_core = np.hypot(ours["core_x"] - ref.core_x.to_value("m"),
                      ours["core_y"] - ref.core_y.to_value("m"))
    d_hmax = abs(ours["h_max"] - ref.h_max.to_value("m"))
    assert sep < 0.01 and d_core < 1.0 and d_hmax < 1.0, (sep, d_core, d_hmax)
    # atol: arccos near 1 resolves ~1e-8 rad, so a zero spread (2 telescopes) comes out ~1e-6 deg
    np.testing.assert_allclose(ours["alt_uncert"], ref.alt_uncert.to_value("deg"), rtol=1e-4,
                               atol=1e-5)
    for key, value in (("direction_deg", sep), ("core_m", d_core), ("h_max_m", d_hmax)):
        stats[key] = max(stats.get(key, 0.0), value)
    stats["n_valid"] = stats.get("n_valid", 0) + 1


def test_same_inputs_match_hillas_reconstructor(processed):
    subarray, events = processed
    step = HillasReconstruction(context=context_from_subarray(subarray),
                                focal_length_choice="equivalent")
    step.setup()
    stats = {}
    for event in events:
        tels = {tid: {"params": ctapipe_params(dl1), "pointing": tel_pointing(event, tid)}
                for tid, dl1 in event.dl1.tel.items()}
        out = step.process({"pointing": pointing(event), "tels": tels})
        check_against_ctapipe(out["dl2"], event, stats)
    print("same inputs:", stats)
    assert stats.get("n_valid", 0) >= 3


def test_full_chain_matches_image_and_shower_processor(processed):
    subarray, events = processed
    context = context_from_subarray(subarray)
    # the reference reads with focal_length_choice=EQUIVALENT (read_events)
    steps = [TailcutsCleaning(context=context),
             ImageParameters(context=context, focal_length_choice="equivalent"),
             QualityCuts(context=context),
             HillasReconstruction(context=context, focal_length_choice="equivalent")]
    for step in steps:
        step.setup()
    stats = {}
    for event in events:
        ev = {"pointing": pointing(event),
              "tels": {tid: {"image": dl1.image, "peak_time": dl1.peak_time,
                             "pointing": tel_pointing(event, tid)}
                       for tid, dl1 in event.dl1.tel.items()}}
        for step in steps:
            ev = step.process(ev)
        for tid, dl1 in event.dl1.tel.items():
            np.testing.assert_array_equal(ev["tels"][tid]["mask"], dl1.image_mask)
        check_against_ctapipe(ev["dl2"], event, stats)
    print("full chain:", stats)
    assert stats.get("n_valid", 0) >= 3


def test_quality_cuts_match_stereo_quality_query(processed):
    from ctapipe.reco.reconstructor import StereoQualityQuery

    subarray, events = processed
    query = StereoQualityQuery()
    n_pass = n_fail = 0
    for event in events:
        for dl1 in event.dl1.tel.values():
            p = dl1.parameters
            params = {"hillas_intensity": p.hillas.intensity,
                      "hillas_width": p.hillas.width.to_value("deg"),
                      "morphology_n_pixels": p.morphology.n_pixels}
            expected = all(query(parameters=p))
            assert passes_stereo_quality(params) == expected
            n_pass += expected
            n_fail += not expected
    assert n_pass and n_fail


def test_quality_step_marks_and_drops():
    step = QualityCuts(drop_failed=True, max_leakage_intensity_2=0.2)
    ev = {"tels": {1: {"params": {"hillas_intensity": 100.0, "hillas_width": 0.1,
                                  "morphology_n_pixels": 10, "leakage_intensity_width_2": 0.1}},
                   2: {"params": {"hillas_intensity": 100.0, "hillas_width": 0.1,
                                  "morphology_n_pixels": 10, "leakage_intensity_width_2": 0.5}},
                   3: {"params": {"hillas_intensity": np.nan}}}}
    out = step.process(ev)
    assert list(out["tels"]) == [1] and out["tels"][1]["use_for_stereo"]


def test_rotation_matches_astropy_telescope_frame():
    from astropy import units as u
    from astropy.coordinates import AltAz, SkyCoord
    from ctapipe.coordinates import TelescopeFrame

    pointing_coord = SkyCoord(alt=65 * u.deg, az=123 * u.deg, frame=AltAz())
    point = SkyCoord(fov_lon=1.3 * u.deg, fov_lat=-0.7 * u.deg,
                     frame=TelescopeFrame(telescope_pointing=pointing_coord))
    ref = point.transform_to(AltAz()).cartesian.xyz.value
    lon, lat = np.deg2rad(1.3), np.deg2rad(-0.7)
    v_tel = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    ours = altaz_to_telescope_matrix(np.deg2rad(65), np.deg2rad(123)).T @ v_tel
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_too_few_telescopes_is_invalid():
    context = {"subarray": {"tels": {}}}
    step = HillasReconstruction(context=context)
    step.setup()
    out = step.process({"pointing": {"alt": 1.2, "az": 0.0},
                        "tels": {1: {"params": {"hillas_intensity": 10.0}}}})
    assert out["dl2"]["is_valid"] is False and np.isnan(out["dl2"]["alt"])
    assert out["dl2"]["multiplicity"] == 0
