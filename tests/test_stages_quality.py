"""stages.quality: the criteria and their counts equal ctapipe's QualityQuery on the same inputs."""

import astropy.units as u
import numpy as np
import pytest

from stages.quality import (
    IMAGE_QUERY,
    QualityCuts,
    add_counts,
    image_criteria,
    query_counts,
    stereo_query,
)

pytest.importorskip("ctapipe")


def table_of(query):
    return {"criteria": list(query.to_table(functions=True)["criteria"]),
            "func": list(query.to_table(functions=True)["func"]),
            "counts": query._counts.tolist(), "cumulative_counts": query._cumulative_counts.tolist()}


def random_params(rng, n):
    out = []
    for _ in range(n):
        nan = rng.random() < 0.1  # an image that failed ImageQualityQuery
        out.append({"hillas_intensity": np.nan if nan else float(rng.uniform(0, 200)),
                    "hillas_width": np.nan if nan else float(rng.choice([0.0, 0.05])),
                    "morphology_n_pixels": -1 if nan else int(rng.integers(0, 8))})
    return out


def test_stereo_counts_equal_ctapipe_stereo_quality_query():
    from ctapipe.containers import ImageParametersContainer
    from ctapipe.reco.reconstructor import StereoQualityQuery

    rng = np.random.default_rng(3)
    reference, total = StereoQualityQuery(), None
    for n_tels in (3, 1, 5, 4, 0, 2):
        params = random_params(rng, n_tels)
        event = {"tels": {i + 1: {"params": p} for i, p in enumerate(params)}}
        QualityCuts().process(event)
        total = add_counts(total, event["quality_counts"]["stereo"])
        for tid, p in enumerate(params, 1):
            container = ImageParametersContainer()
            container.hillas.intensity = p["hillas_intensity"]
            container.hillas.width = p["hillas_width"] * u.deg
            container.morphology.n_pixels = p["morphology_n_pixels"]
            assert event["tels"][tid]["use_for_stereo"] == all(reference(parameters=container))
    assert total == table_of(reference)
    assert total["counts"][0] == 15


def test_image_counts_equal_ctapipe_image_quality_query():
    from ctapipe.image.image_processor import ImageQualityQuery

    rng = np.random.default_rng(4)
    reference, checked = ImageQualityQuery(), []
    for n_selected in (0, 1, 2, 7):
        image = rng.uniform(-1, 10, 20).astype(np.float32)
        mask = np.zeros(20, bool)
        mask[:n_selected] = True
        checked.append(image_criteria(image, mask))
        reference(image=image[mask])
    assert query_counts(IMAGE_QUERY, checked) == table_of(reference)


def test_configured_cuts_name_their_criteria():
    query = stereo_query(min_intensity=100.0, max_leakage_intensity_2=0.2)
    assert [name for name, _ in query] == ["> 100 phe", "Positive width", "> 3 pixels",
                                           "leakage <= 0.2"]
    with pytest.raises(ValueError, match="criteria changed"):
        add_counts(query_counts(query, []), query_counts(stereo_query(), []))
