"""Dataset lookup: FLOW_DATA_DIR, the user cache, and extraction of the eventio resources."""

import io
import os
import tarfile

import pytest

from flow.errors import DataError
from stages import datasets


def make_sdist(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_resources_takes_only_resources_flat(tmp_path):
    archive = tmp_path / "eventio-0.11.0.tar.gz"
    make_sdist(archive, {
        "eventio-0.11.0/eventio/resources/gamma_test.simtel.gz": b"simtel",
        "eventio-0.11.0/eventio/resources/sub/../../../evil.txt": b"evil",
        "eventio-0.11.0/eventio/__init__.py": b"code",
    })
    out = datasets.extract_resources(archive, tmp_path / "cache")
    assert sorted(p.name for p in out) == ["evil.txt", "gamma_test.simtel.gz"]
    assert (tmp_path / "cache" / "gamma_test.simtel.gz").read_bytes() == b"simtel"
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "cache" / "__init__.py").exists()


def test_extract_resources_errors(tmp_path):
    empty = tmp_path / "x.tar.gz"
    make_sdist(empty, {"eventio-0.11.0/setup.py": b""})
    with pytest.raises(DataError, match="no eventio/resources"):
        datasets.extract_resources(empty, tmp_path / "c")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    with pytest.raises(DataError, match="cannot extract"):
        datasets.extract_resources(bad, tmp_path / "c")


def test_find_in_flow_data_dir(tmp_path, monkeypatch):
    (tmp_path / "a.simtel.gz").write_bytes(b"x")
    monkeypatch.setenv("FLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "nocache"))
    assert datasets.find_dataset("a.simtel.gz") == tmp_path / "a.simtel.gz"
    assert datasets.data_dir() == tmp_path
    assert datasets.resolve_path("dataset:a.simtel.gz") == tmp_path / "a.simtel.gz"
    assert str(datasets.resolve_path("/x/y.h5")) == "/x/y.h5"
    with pytest.raises(DataError, match="FLOW_DATA_DIR"):
        datasets.find_dataset("missing.simtel.gz")


def test_find_in_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOW_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "flow-iact" / "data"
    cache.mkdir(parents=True)
    (cache / "b.simtel.zst").write_bytes(b"x")
    assert datasets.find_dataset("b.simtel.zst") == cache / "b.simtel.zst"
    assert datasets.data_dir() == cache


def test_bad_flow_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOW_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="not a directory"):
        datasets.data_dir()


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOW_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(datasets, "EVENTIO_SDIST", "eventio==0.0.0.does.not.exist")
    with pytest.raises(DataError, match="set FLOW_DATA_DIR"):
        datasets.find_dataset("gamma_test.simtel.gz")


@pytest.mark.skipif(bool(os.environ.get("FLOW_DATA_DIR")), reason="CI provides FLOW_DATA_DIR")
@pytest.mark.slow
def test_real_download(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = datasets.find_dataset("gamma_test.simtel.gz")
    assert path.stat().st_size > 1_000_000
    assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_sdist_file_missing_from_flow_data_dir_is_fetched_into_the_cache(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("FLOW_DATA_DIR", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    name = datasets.SIMTEL_FILES[-1]
    fetched = []

    def fake_download(target):
        target.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(b"simtel")
        fetched.append(target)
        return [target / name]

    monkeypatch.setattr(datasets, "download_resources", fake_download)
    assert datasets.find_dataset(name) == datasets.cache_dir() / name
    assert fetched == [datasets.cache_dir()]
    assert datasets.find_dataset(name) == datasets.cache_dir() / name  # now from the cache
    assert len(fetched) == 1
    with pytest.raises(DataError, match="FLOW_DATA_DIR"):  # not an sdist file: no download
        datasets.find_dataset("other.simtel.gz")
    assert len(fetched) == 1
