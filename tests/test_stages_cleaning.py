"""stages.cleaning against ctapipe's tailcuts_clean / TailcutsImageCleaner on real images."""

import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_stages_calib import FILES, context_from_subarray, read_events  # noqa: E402

from stages.cleaning import TailcutsCleaning, tailcuts_clean, thresholds_for  # noqa: E402

SETTINGS = [
    dict(picture_thresh=10.0, boundary_thresh=5.0, keep_isolated_pixels=False,
         min_number_picture_neighbors=2),
    dict(picture_thresh=6.0, boundary_thresh=3.0, keep_isolated_pixels=False,
         min_number_picture_neighbors=0),
    dict(picture_thresh=6.0, boundary_thresh=3.0, keep_isolated_pixels=True,
         min_number_picture_neighbors=1),
    dict(picture_thresh=4.0, boundary_thresh=2.0, keep_isolated_pixels=False,
         min_number_picture_neighbors=1),
]


@pytest.fixture(scope="module", params=list(FILES))
def dataset(request):
    return read_events(request.param, 8)


@pytest.mark.parametrize("cuts", SETTINGS)
def test_masks_identical_to_ctapipe(dataset, cuts):
    from ctapipe.image import tailcuts_clean as ref

    subarray, events = dataset
    n_kept = 0
    for event in events:
        for tel_id, dl1 in event.dl1.tel.items():
            geom = subarray.tel[tel_id].camera.geometry
            nb = geom.neighbor_matrix_sparse
            ours = tailcuts_clean(dl1.image, nb.indptr.astype(np.int32),
                                  nb.indices.astype(np.int32), **cuts)
            np.testing.assert_array_equal(ours, ref(geom, dl1.image, **cuts))
            n_kept += ours.sum()
    assert n_kept > 0


def test_step_matches_ctapipe_process_default_and_per_camera(dataset):
    from ctapipe.image import TailcutsImageCleaner
    from traitlets.config import Config

    subarray, events = dataset
    config = Config({"TailcutsImageCleaner": {
        "picture_threshold_pe": [("type", "*", 10.0), ("type", "*LSTCam", 8.0),
                                 ("type", "*DigiCam", 7.0)],
        "boundary_threshold_pe": [("type", "*", 5.0), ("type", "*LSTCam", 4.0),
                                  ("type", "*DigiCam", 3.5)]}})
    for per_camera, cfg in [({}, None), ({"LSTCam": {"picture_thresh": 8, "boundary_thresh": 4},
                                          "DigiCam": {"picture_thresh": 7,
                                                      "boundary_thresh": 3.5}}, config)]:
        cleaner = TailcutsImageCleaner(subarray, config=cfg)
        step = TailcutsCleaning(context=context_from_subarray(subarray), per_camera=per_camera)
        step.setup()
        for event in events:
            ev = {"tels": {tid: {"image": dl1.image} for tid, dl1 in event.dl1.tel.items()}}
            out = step.process(ev)
            for tel_id, dl1 in event.dl1.tel.items():
                ref = cleaner(tel_id=tel_id, image=dl1.image)
                np.testing.assert_array_equal(out["tels"][tel_id]["mask"], ref)


def test_ctapipe_process_default_mask_equals_image_processor(dataset):
    """ImageProcessor (ctapipe-process) with default config gives the same mask as our step."""
    from ctapipe.image import ImageProcessor

    subarray, events = dataset
    processor = ImageProcessor(subarray)
    step = TailcutsCleaning(context=context_from_subarray(subarray))
    step.setup()
    for event in map(copy.deepcopy, events[:3]):
        processor(event)
        out = step.process({"tels": {t: {"image": d.image} for t, d in event.dl1.tel.items()}})
        for tel_id, dl1 in event.dl1.tel.items():
            np.testing.assert_array_equal(out["tels"][tel_id]["mask"], dl1.image_mask)


def test_thresholds_for_matching_rules():
    tel = {"camera": {"name": "LSTCam"}, "optics": {"name": "LST"}}
    defaults = {"picture_thresh": 10.0, "boundary_thresh": 5.0}
    assert thresholds_for(1, tel, defaults, {})["picture_thresh"] == 10.0
    assert thresholds_for(1, tel, defaults, {"LST*": {"picture_thresh": 8}})["picture_thresh"] == 8
    assert thresholds_for(3, tel, defaults, {"id:3": {"boundary_thresh": 1}})["boundary_thresh"] == 1
    with pytest.raises(ValueError, match="unknown keys"):
        thresholds_for(1, tel, defaults, {"LSTCam": {"pictur": 1}})


def test_nan_and_empty_images_give_empty_masks():
    indptr, indices = np.array([0, 1, 2], np.int32), np.array([1, 0], np.int32)
    assert not tailcuts_clean(np.array([np.nan, np.nan], np.float32), indptr, indices).any()
    assert not tailcuts_clean(np.zeros(2, np.float32), indptr, indices).any()
