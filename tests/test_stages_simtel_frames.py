"""SimtelFrames (the serial half of the split sim_telarray reader) keeps SimtelSource's guarantees,
and SimtelFrames -> SimtelParser gives SimtelSource's events exactly, in one process.

The same through real processes (flow run, output tables, dead letters, --resume):
tests/test_stages_simtel_parser.py.
"""

import gzip
import re
import warnings

import numpy as np
import pytest
from conftest import GAMMA_TEST, SST1M

from flow.errors import DataError
from stages.io.simtel import SimtelReadWarning, SimtelSource
from stages.io.simtel_frames import SimtelFrames
from stages.io.simtel_parser import SimtelParser
from tests.test_stages_simtel import flipped_file


def assert_same(a, b, where=""):
    """Equal values, types, dtypes and shapes, all the way down (NaN equals NaN)."""
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), (where, list(a), list(b))
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, (where, a, b)


def split_events(path, **params):
    """(keys, events) of SimtelFrames -> SimtelParser, the parser seeing only the context."""
    frames = SimtelFrames(name="read", path=str(path), **params)
    parser = SimtelParser(name="parse", context=frames.publish_context())
    parser.setup()
    raw = list(frames.process())
    return [k.key for k in raw], [parser.process(k.event) for k in raw]


PARAMS = [{}, {"allowed_tels": [1, 2, 3, 29, 55]}, {"max_events": 3},
          {"skip_calibration_events": False}]


@pytest.mark.parametrize("params", PARAMS, ids=lambda p: ",".join(p) or "defaults")
@pytest.mark.parametrize("name", [SST1M, GAMMA_TEST], ids=lambda n: n[:12])
def test_split_gives_simtel_source_events_exactly(data_file, name, params):
    path = data_file(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimtelReadWarning)  # gamma_test's end is cut
        whole = list(SimtelSource(name="read", path=str(path), **params).process())
        keys, events = split_events(path, **params)
    assert keys == [k.key for k in whole] and len(keys) > 0
    for key, ours, ref in zip(keys, events, whole, strict=True):
        assert_same(ours, ref.event, key)


def test_context_is_simtel_sources_plus_the_run_record(data_file):
    path = data_file(SST1M)
    whole = SimtelSource(name="read", path=str(path)).publish_context()
    context = SimtelFrames(name="read", path=str(path)).publish_context()
    assert set(context) == set(whole) | {"simtel_frames.read"}
    for key in whole:
        assert_same(context[key], whole[key], key)
    record = context["simtel_frames.read"]
    assert record["run"]["obs_id"] == 102 and set(record["monitoring"]) == set(whole["subarray"]["tels"])


def test_resume_skips_the_same_events(data_file):
    path = data_file(SST1M)
    assert SimtelFrames.replayable
    keys = [k.key for k in SimtelSource(path=str(path)).process()]
    frames = SimtelFrames(path=str(path))
    assert [k.key for k in frames.process()] == keys
    assert [k.key for k in frames.resume(7)] == keys[7:]
    assert [k.key for k in frames.resume(len(keys))] == []


def read_both(path, **params):
    """Keys and SimtelReadWarning texts of SimtelSource and of SimtelFrames on one file; a
    DataError (the header cut: the run is refused before it starts) as its type name."""
    out = []
    for cls in (SimtelSource, SimtelFrames):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                src = cls(name="read", path=str(path), **params)
                src.publish_context()
                keys = [k.key for k in src.process()]
            except DataError:
                keys = "DataError"
        out.append((keys, [str(w.message) for w in caught
                           if issubclass(w.category, SimtelReadWarning)]))
    return out


def without_reason(message: str) -> str:
    """A SimtelReadWarning without its parenthesised reason: eventio's parser may name a cut
    object's error (ValueError: buffer is smaller...) where the framing says EOFError."""
    return re.sub(r" \([^()]*\)$", "", message)


@pytest.fixture(scope="module")
def plain_gamma_test(data_file):
    return gzip.open(data_file(GAMMA_TEST)).read()


def test_truncated_file_same_warnings_and_every_complete_event(tmp_path, plain_gamma_test):
    raw, seen = plain_gamma_test, 0
    for fraction in (0.02, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99):
        cut = tmp_path / f"cut{fraction}.simtel"
        cut.write_bytes(raw[: int(len(raw) * fraction)])
        (whole, whole_warned), (split, split_warned) = read_both(cut)
        assert split == whole, fraction
        assert [without_reason(m) for m in split_warned] == \
            [without_reason(m) for m in whole_warned], fraction
        if whole != "DataError":
            assert len(split_warned) == 1 and cut.name in split_warned[0]
            seen += len(split)
    assert seen > 0


def test_truncated_gzip_stream(tmp_path, data_file):
    data = data_file(GAMMA_TEST).read_bytes()
    cut = tmp_path / "cut.simtel.gz"
    cut.write_bytes(data[: len(data) // 2])
    (whole, whole_warned), (split, split_warned) = read_both(cut)
    assert split == whole and len(split) >= 1
    assert [without_reason(m) for m in split_warned] == [without_reason(m) for m in whole_warned]


def test_an_object_larger_than_max_event_mb_ends_the_stream_before_it_is_read(data_file):
    path = data_file(SST1M)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keys = [k.key for k in SimtelFrames(path=str(path), max_event_mb=0.25).process()]
    warned = [str(w.message) for w in caught if issubclass(w.category, SimtelReadWarning)]
    assert len(warned) == 1 and "more than max_event_mb" in warned[0]
    assert len(keys) < 31


def test_the_parser_refuses_events_it_cannot_know(data_file):
    parser = SimtelParser(name="parse", context={})
    with pytest.raises(DataError, match="SimtelFrames"):
        parser.process({"obs_id": 1, "event_id": 2})
    with pytest.raises(DataError, match="simtel_frames.read"):
        parser.process({"obs_id": 1, "event_id": 2, "simtel_raw": {"source": "read"}})


@pytest.mark.parametrize("seed", range(3))
def test_flipped_bytes_never_crash_or_hang(tmp_path, plain_gamma_test, seed):
    bad = flipped_file(tmp_path, plain_gamma_test, seed)
    frames = SimtelFrames(name="read", path=str(bad), read_timeout_s=60)
    try:
        parser = SimtelParser(name="parse", context=frames.publish_context())
    except DataError as exc:  # a flipped byte in the run header: refused before the run
        assert "flipped.simtel" in str(exc)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = list(frames.process())
    assert len(raw) <= 15
    for w in caught:
        if issubclass(w.category, SimtelReadWarning):
            assert "flipped.simtel" in str(w.message) and "after event" in str(w.message)
    for item in raw:  # a corrupt object is the parser's error (dead-lettered), never a hang
        try:
            parser.process(item.event)
        except Exception:  # noqa: BLE001 - any exception is what the engine dead-letters
            pass
