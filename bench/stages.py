"""Per-image time of stages' cleaning and image-parameter kernels vs ctapipe's functions.

Both run in the same process on the same real images (ctapipe-calibrated simtel events of both
test files); each timing is the median over repeats of a pass over all images, divided by the
number of images; ours and ctapipe alternate within each repeat and the speedup is the median of
the per-repeat ratios. The last line printed is one JSON object:
``{"speedup_vs_ctapipe": {"cleaning": r, "hillas": r, "all_image": r}}``.

    python bench/stages.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np

# this file is named like the package it measures: import the package, not ourselves
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))
warnings.filterwarnings("ignore")

from astropy.utils import iers  # noqa: E402

iers.conf.auto_download = False
iers.conf.auto_max_age = None

from stages.cleaning import tailcuts_clean  # noqa: E402
from stages.hillas import hillas_kernel  # noqa: E402
from stages.image import CameraFrameGeometry, image_parameters  # noqa: E402

FILES = ("gamma_test.simtel.gz",
         "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst")


def load_images(max_events: int):
    """[(ctapipe geometry, telescope-frame geometry, our geometry, image, peak_time)]."""
    from ctapipe.calib import CameraCalibrator
    from ctapipe.coordinates import TelescopeFrame
    from ctapipe.io import SimTelEventSource

    from stages.datasets import find_dataset  # $FLOW_DATA_DIR, the user cache, or a download

    out = []
    for name in FILES:
        source = SimTelEventSource(str(find_dataset(name)), max_events=max_events,
                                   focal_length_choice="EQUIVALENT")
        calib, frames = CameraCalibrator(source.subarray), {}
        for event in source:
            calib(event)
            for tel_id, dl1 in event.dl1.tel.items():
                tel = source.subarray.tel[tel_id]
                if tel.camera.name not in frames:
                    g = tel.camera.geometry
                    nb = g.neighbor_matrix_sparse
                    camera = {"pix_x": g.pix_x.to_value("m"), "pix_y": g.pix_y.to_value("m"),
                              "pix_area": g.pix_area.to_value("m2"), "pix_type": g.pix_type.value,
                              "neighbors_indptr": nb.indptr, "neighbors_indices": nb.indices}
                    frames[tel.camera.name] = (
                        g, g.transform_to(TelescopeFrame()),
                        CameraFrameGeometry.from_camera(
                            camera, tel.optics.equivalent_focal_length.to_value("m")))
                out.append((*frames[tel.camera.name], dl1.image, dl1.peak_time))
    return out


def ctapipe_all(geom, geom_tel, image, peak_time):
    from ctapipe.containers import IntensityStatisticsContainer, PeakTimeStatisticsContainer
    from ctapipe.image import (
        concentration_parameters,
        hillas_parameters,
        leakage_parameters,
        morphology_parameters,
        timing_parameters,
    )
    from ctapipe.image import (
        tailcuts_clean as ct_clean,
    )
    from ctapipe.image.statistics import descriptive_statistics

    mask = ct_clean(geom, image, 10.0, 5.0, False, 2)
    selected = image[mask]
    if not (selected.sum() > 0 and selected.size > 1):
        return
    sel_geom = geom_tel[mask]
    hillas = hillas_parameters(sel_geom, selected)
    leakage_parameters(geom_tel, image, mask)
    concentration_parameters(sel_geom, selected, hillas)
    morphology_parameters(geom_tel, mask)
    descriptive_statistics(selected, container_class=IntensityStatisticsContainer)
    timing_parameters(sel_geom, selected, peak_time[mask], hillas)
    descriptive_statistics(peak_time[mask], container_class=PeakTimeStatisticsContainer)


def per_image(func, items) -> float:
    start = time.perf_counter()
    for item in items:
        func(*item)
    return (time.perf_counter() - start) / len(items)


def compare(ours, ref, items, repeats: int) -> tuple[float, float, float]:
    """(median ours s/image, median ctapipe s/image, median of the per-repeat speedups).

    Ours and ctapipe alternate within each repeat, so that load from other processes on the
    machine hits both alike.
    """
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ours.append(per_image(ours, items))
        t_ref.append(per_image(ref, items))
    ratios = [r / o for o, r in zip(t_ours, t_ref, strict=True)]
    return statistics.median(t_ours), statistics.median(t_ref), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few events and repeats (< 1 min)")
    args = parser.parse_args()
    max_events, repeats = (5, 7) if args.quick else (20, 11)
    from ctapipe.image import hillas_parameters
    from ctapipe.image import tailcuts_clean as ct_clean

    images = load_images(max_events)
    masks = [ct_clean(g, img, 10.0, 5.0, False, 2) for g, _, _, img, _ in images]
    good = [(gt, ours, img[m], m, img, pt) for (g, gt, ours, img, pt), m in zip(images, masks, strict=True)
            if img[m].sum() > 0 and m.sum() > 1]

    def ours_clean(g, gt, ours, img, pt):
        tailcuts_clean(img, ours.indptr, ours.indices, 10.0, 5.0, False, 2)

    def ctapipe_clean(g, gt, ours, img, pt):
        ct_clean(g, img, 10.0, 5.0, False, 2)

    def ours_hillas(gt, ours, sel, m, img, pt):
        hillas_kernel(ours.x[m], ours.y[m], ours.area[m], sel.astype(np.float64))

    def ctapipe_hillas(gt, ours, sel, m, img, pt):
        hillas_parameters(gt[m], sel)

    def ours_all(g, gt, ours, img, pt):
        mask = tailcuts_clean(img, ours.indptr, ours.indices, 10.0, 5.0, False, 2)
        image_parameters(img, pt, mask, ours)

    def ctapipe_all_image(g, gt, ours, img, pt):
        ctapipe_all(g, gt, img, pt)

    for func, items in ((ours_clean, images[:1]), (ours_hillas, good[:1]), (ours_all, images[:2]),
                        (ctapipe_all_image, images[:2])):
        func(*items[0])  # compile / warm caches outside the timed loops
    results = {}
    for name, ours, ref, items in (("cleaning", ours_clean, ctapipe_clean, images),
                                   ("hillas", ours_hillas, ctapipe_hillas, good),
                                   ("all_image", ours_all, ctapipe_all_image, images)):
        t_ours, t_ref, speedup = compare(ours, ref, items, repeats)
        results[name] = round(speedup, 2)
        print(f"{name:10s} ours {t_ours * 1e6:9.1f} us/image  ctapipe {t_ref * 1e6:9.1f} us/image"
              f"  speedup {speedup:6.1f}x  ({len(items)} images)")
    print(json.dumps({"speedup_vs_ctapipe": results}))


if __name__ == "__main__":
    main()
