"""Every camera of every downloaded sim_telarray file against ``ctapipe-process`` (ctapipe 0.28).

The reference is the real command-line tool with its default configuration, run once per file in a
module-scoped fixture (``--write-images --write-parameters --write-showers``). The only option
given is ``SimTelEventSource.focal_length_choice=EQUIVALENT`` for files without effective focal
lengths, where ctapipe's default (EFFECTIVE) refuses to open the file. flow runs its own stages
with their default parameters on the same file: SimtelSource -> ChargeExtraction ->
TailcutsCleaning -> ImageParameters -> QualityCuts -> HillasReconstruction.

Per file and camera type:
- the same telescope events on both sides; cleaning masks identical;
- every DL1 parameter (Hillas, leakage, concentration, timing, morphology, intensity and peak-time
  statistics) within 1e-4 relative; NaN on one side and a number on the other is a mismatch;
- stereo alt/az of the events this camera took part in within 0.01 deg, the same validity;
- the parameters of the simulated true image (``/simulation/event/telescope/parameters``, every
  ``true_*`` column) within 1e-4 relative, and ``core_psi`` (set by the HillasReconstructor for the
  telescopes it used, NaN for the others) within 1e-4 relative.

Timing: ctapipe's LTS fit draws its 5 random starts from one module-wide generator, so its result
depends on how many images were fitted before it, in that process (order-dependent, so no parallel
pipeline can reproduce it); flow draws the starts of every image from a generator reset to seed 0
(stages.timing). The reference therefore runs ctapipe-process's own ``main`` with that one change:
``ctapipe.fitting.FIT_RNG`` reset to seed 0 before each image's ``timing_parameters`` (see
`SEEDED_CTAPIPE_PROCESS`); everything else is the installed tool. With 2-3 pixels (every pair fits
exactly, the residual rounding noise picks the pair) only "both fitted or both NaN" is checked, as
in tests/test_stages_image.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from collections import defaultdict

import numpy as np
import pytest

from stages import datasets

pytest.importorskip("ctapipe")
tables = pytest.importorskip("tables")

from astropy.utils import iers  # noqa: E402

iers.conf.auto_download = False

from stages.calib import ChargeExtraction  # noqa: E402
from stages.cleaning import TailcutsCleaning  # noqa: E402
from stages.image import FIELDS, TRUE_FIELDS, ImageParameters  # noqa: E402
from stages.io.simtel import SimtelSource  # noqa: E402
from stages.quality import QualityCuts  # noqa: E402
from stages.reco import HillasReconstruction  # noqa: E402

MAX_EVENTS = 12
RTOL, ATOL = 1e-4, 1e-9
STEREO_TOL_DEG = 0.01
TIMING = ("timing_slope", "timing_intercept", "timing_deviation")
# file -> camera types (ctapipe's "<optics>_<camera>" names); test_cameras_are_all_listed checks
# this table against the files' subarrays, so a camera cannot be forgotten.
CAMERAS = {
    "gamma_test.simtel.gz": ("LST_LST_LSTCam", "MST_MST_NectarCam", "SST_ASTRI_CHEC",
                             "MST_SCT_SCTCam"),
    "gamma_test_large_truncated.simtel.gz": ("LST_LST_LSTCam", "MST_MST_FlashCam",
                                             "SST_ASTRI_ASTRICam"),
    "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.gz":
        ("SST_1M_DigiCam",),
    "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst":
        ("SST_1M_DigiCam",),
    "gamma_20deg_0deg_run103___cta-prod4-sst-astri_desert-2150m-Paranal-sst-astri.simtel.gz":
        ("SST_ASTRI_ASTRICam",),
}
# files without true images (so without true-image parameters, on both sides)
NO_TRUE_IMAGES = {"gamma_test.simtel.gz", "gamma_test_large_truncated.simtel.gz"}
CASES = [(name, cam) for name, cams in CAMERAS.items() for cam in cams]
SUMMARY: dict = {}


def has_effective_focal_length(path) -> bool:
    from eventio import SimTelFile

    with SimTelFile(str(path)) as f:
        return all(np.isfinite(d["camera_settings"].get("effective_focal_length", np.nan))
                   for d in f.telescope_descriptions.values())


# ctapipe-process's own entry point, with ctapipe's LTS generator reset to seed 0 before each
# image's timing fit (what flow does per image; see the module docstring)
SEEDED_CTAPIPE_PROCESS = """
import sys
import numpy as np
import ctapipe.fitting
import ctapipe.image.image_processor as image_processor
from ctapipe.tools.process import main

fit = image_processor.timing_parameters

def seeded_timing_parameters(*args, **kwargs):
    ctapipe.fitting.FIT_RNG.bit_generator.state = np.random.default_rng(0).bit_generator.state
    return fit(*args, **kwargs)

image_processor.timing_parameters = seeded_timing_parameters
sys.argv[0] = "ctapipe-process"
sys.exit(main())
"""


def run_ctapipe_process(path, output) -> None:
    cmd = [sys.executable, "-c", SEEDED_CTAPIPE_PROCESS,
           f"--input={path}", f"--output={output}", "--write-images", "--write-parameters",
           "--write-showers", f"--max-events={MAX_EVENTS}", "--overwrite", "--quiet"]
    if not has_effective_focal_length(path):
        cmd.append("--SimTelEventSource.focal_length_choice=EQUIVALENT")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(output))  # its provenance log goes there too
    assert proc.returncode == 0, proc.stderr[-2000:]


def read_ctapipe(output) -> dict:
    """{tel type: ..., (event_id, tel_id): {mask, image, params}, ("dl2", event_id): dl2 row}."""
    out = {"tels": {}, "dl2": {}, "types": {}}
    with tables.open_file(output) as h5:
        for row in h5.root.configuration.instrument.subarray.layout.read():
            out["types"][int(row["tel_id"])] = "_".join(
                row[key].decode() for key in ("type", "name", "camera_name"))
        images = h5.root.dl1.event.telescope.images
        parameters = h5.root.dl1.event.telescope.parameters
        truth = "/simulation/event/telescope/parameters"  # files with true images only
        truth = h5.get_node(truth) if truth in h5 else None
        for table in images:
            params = {int(r["event_id"]): r for r in getattr(parameters, table.name).read()}
            true = {int(r["event_id"]): r for r in getattr(truth, table.name).read()} if (
                truth is not None) else {}
            for row in table.read():
                key = (int(row["event_id"]), int(row["tel_id"]))
                p = params[key[0]]
                out["tels"][key] = {"mask": row["image_mask"], "image": row["image"],
                                    "params": {f: float(p[f]) for f in (*FIELDS, "core_psi")},
                                    "true_params": {f"true_{f}": float(true[key[0]][f"true_{f}"])
                                                    for f in TRUE_FIELDS} if true else None}
        for row in h5.root.dl2.event.subarray.geometry.HillasReconstructor.read():
            out["dl2"][int(row["event_id"])] = {
                "alt": float(row["HillasReconstructor_alt"]),
                "az": float(row["HillasReconstructor_az"]),
                "is_valid": bool(row["HillasReconstructor_is_valid"]),
                "telescopes": np.flatnonzero(row["HillasReconstructor_telescopes"]) + 1}
    return out


def run_flow(path) -> tuple[dict, dict]:
    """(context, {event_id: event}) of flow's stages with their default parameters."""
    source = SimtelSource(path=str(path), max_events=MAX_EVENTS)
    context = source.publish_context()
    steps = [cls(context=context) for cls in (ChargeExtraction, TailcutsCleaning, ImageParameters,
                                              QualityCuts, HillasReconstruction)]
    for step in steps:
        step.setup()
    events = {}
    for keyed in source.process():
        event = keyed.event
        for step in steps:
            event = step.process(event)
        events[event["event_id"]] = event
    return context, events


@pytest.fixture(scope="module")
def processed(request, tmp_path_factory):
    """(ctapipe's tables, flow's context and events) of one file, each computed once."""
    path = datasets.find_dataset(request.param)
    output = tmp_path_factory.mktemp("ctapipe") / "dl1.h5"
    run_ctapipe_process(path, output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context, events = run_flow(path)
    return request.param, read_ctapipe(output), context, events


def mismatch(key: str, ours: float, ref: float, n_pixels: float) -> str | None:
    """Why two parameter values differ, or None if they agree."""
    if math.isnan(ours) or math.isnan(ref):
        return None if math.isnan(ours) and math.isnan(ref) else "NaN on one side"
    if key in TIMING and n_pixels <= 3:
        return None  # 2-3 pixels: the LTS start decides (module docstring)
    if key.removeprefix("true_") == "hillas_psi" and abs(abs(ours - ref) - 180.0) < 1e-3:
        return None  # +-90 deg is one axis
    if abs(ours - ref) <= ATOL + RTOL * abs(ref):
        return None
    return f"{ours!r} vs ctapipe {ref!r}"


def compare_camera(name, ref, context, events, cam) -> dict:
    """Counts and the first few mismatches of one camera type of one file."""
    stats = defaultdict(int)
    problems = []
    tel_ids = {tid for tid, kind in ref["types"].items() if kind == cam}
    ref_keys = {k for k in ref["tels"] if k[1] in tel_ids}
    our_keys = {(eid, tid) for eid, ev in events.items() for tid in ev["tels"] if tid in tel_ids}
    for key in sorted(ref_keys ^ our_keys):
        problems.append(f"{key}: only in {'ctapipe' if key in ref_keys else 'flow'}")
    for key in sorted(ref_keys & our_keys):
        r, ours = ref["tels"][key], events[key[0]]["tels"][key[1]]
        stats["images"] += 1
        if np.array_equal(ours["mask"], r["mask"]):
            stats["masks_identical"] += 1
        else:
            problems.append(f"{key}: mask {int(ours['mask'].sum())} pixels vs ctapipe "
                            f"{int(r['mask'].sum())}")
        bad = {f: why for f in FIELDS
               if (why := mismatch(f, ours["params"][f], r["params"][f],
                                   r["params"]["morphology_n_pixels"]))}
        if not any(f.startswith("hillas_") for f in bad):
            stats["hillas_ok"] += 1
        if not bad:
            stats["params_ok"] += 1
        problems.extend(f"{key} {f}: {why}" for f, why in bad.items())
        if r["true_params"] is None:  # no true image: neither side parametrises one
            bad_true = {"true_params": "only in flow"} if "true_params" in ours else {}
        else:
            stats["true_images"] += 1
            bad_true = {f: why for f, why in (
                (f, mismatch(f, float(ours["true_params"][f]), r["true_params"][f], np.inf))
                for f in r["true_params"]) if why}
        stats["true_params_ok"] += not bad_true
        if why := mismatch("core_psi", ours["params"].get("core_psi", math.nan),
                           r["params"]["core_psi"], np.inf):
            bad_true["core_psi"] = why
        else:
            stats["core_psi_ok"] += 1
        stats["core_psi_set"] += math.isfinite(r["params"]["core_psi"])
        problems.extend(f"{key} {f}: {why}" for f, why in bad_true.items())
    for event_id, r in sorted(ref["dl2"].items()):
        if not tel_ids & set(r["telescopes"].tolist()):
            continue
        dl2 = events[event_id]["dl2"]
        stats["stereo"] += 1
        if bool(dl2["is_valid"]) != r["is_valid"]:
            problems.append(f"event {event_id}: stereo valid {dl2['is_valid']} vs {r['is_valid']}")
            continue
        d_alt, d_az = abs(dl2["alt"] - r["alt"]), abs((dl2["az"] - r["az"] + 180) % 360 - 180)
        if r["is_valid"] and not (d_alt <= STEREO_TOL_DEG and d_az <= STEREO_TOL_DEG):
            problems.append(f"event {event_id}: stereo off by alt {d_alt:.4f} az {d_az:.4f} deg")
            continue
        stats["stereo_ok"] += 1
    return {"stats": dict(stats), "problems": problems}


def case_id(name: str, cam: str) -> str:
    short = name.split("___")[-1].replace("desert-2150m-Paranal-", "")
    return f"{short}-{cam}"


@pytest.mark.timeout(900)  # the first case of a file pays ctapipe-process and numba compiles
@pytest.mark.parametrize("processed,cam", CASES, indirect=["processed"],
                         ids=[case_id(n, c) for n, c in CASES])
def test_camera_matches_ctapipe_process(processed, cam):
    name, ref, context, events = processed
    result = compare_camera(name, ref, context, events, cam)
    SUMMARY[(name, cam)] = result["stats"]
    print(f"{case_id(name, cam)}: {result['stats']}")  # shown with -rP
    stats = result["stats"]
    assert stats.get("images", 0) > 0, f"{cam}: no image compared"
    assert not result["problems"], "\n".join(result["problems"][:30])
    assert stats["true_params_ok"] == stats["core_psi_ok"] == stats["images"]
    assert stats.get("true_images", 0) == (0 if name in NO_TRUE_IMAGES else stats["images"])


def test_cameras_are_all_listed():
    """Every sim_telarray file of the downloader, and every camera type in it, is compared."""
    from ctapipe.io import SimTelEventSource

    assert set(CAMERAS) == set(datasets.SIMTEL_FILES)
    for name, cameras in CAMERAS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = SimTelEventSource(datasets.find_dataset(name), max_events=1,
                                       focal_length_choice="EQUIVALENT")
        assert sorted({str(tel) for tel in source.subarray.tel.values()}) == sorted(cameras), name
