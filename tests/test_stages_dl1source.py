"""DL1Source re-reads what DL1Writer wrote: same events, params, images, truth and context."""

import numpy as np
import pytest
from test_stages_hdf5 import run_writer, toy_events

from stages.io.dl1 import DL1Source
from stages.io.hdf5 import DL1Writer


@pytest.mark.parametrize("images", [True, False])
def test_roundtrip(tmp_path, images):
    ctx, events = toy_events(12, seed=4)
    path = tmp_path / "dl1.h5"
    run_writer(DL1Writer, path, ctx, events, write_images=images)
    src = DL1Source(path=str(path))
    back_ctx = src.publish_context()
    assert src.total() == len(events)
    assert sorted(back_ctx["subarray"]["tels"]) == sorted(ctx["subarray"]["tels"])
    cam = back_ctx["subarray"]["tels"][1]["camera"]
    np.testing.assert_array_equal(cam["neighbors_indices"], ctx["subarray"]["tels"][1]["camera"]["neighbors_indices"])
    back = list(src.process())
    assert [k.key for k in back] == [k for k, _ in events]
    for k, (_, ev) in zip(back, events, strict=True):
        got = k.event
        assert got["simulation"]["energy"] == pytest.approx(ev["simulation"]["energy"])
        assert got["simulation"]["alt"] == pytest.approx(ev["simulation"]["alt"])
        assert got["simulation"]["shower_primary_id"] == ev["simulation"]["shower_primary_id"]
        assert sorted(got["tels"]) == sorted(ev["tels"])
        for tid, tel in ev["tels"].items():
            assert got["tels"][tid]["params"] == pytest.approx(tel["params"])
            if images:
                np.testing.assert_array_equal(got["tels"][tid]["image"], tel["image"])
                np.testing.assert_array_equal(got["tels"][tid]["mask"], tel["mask"])
                np.testing.assert_array_equal(got["tels"][tid]["true_image"], tel["true_image"])
            else:
                assert "image" not in got["tels"][tid]
    assert len(list(DL1Source(path=str(path), max_events=5).process())) == 5


def test_missing_file(tmp_path):
    from flow.errors import DataError

    with pytest.raises(DataError, match="nope.h5"):
        DL1Source(path=str(tmp_path / "nope.h5")).publish_context()
