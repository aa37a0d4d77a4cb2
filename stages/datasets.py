"""Where the example data files live, and how to get them.

`find_dataset(name)` returns the path of a named test file (``gamma_test.simtel.gz``...). It looks in

1. ``$FLOW_DATA_DIR`` (CI and shared machines set it),
2. the user cache ``$XDG_CACHE_HOME/flow-iact/data`` (default ``~/.cache/flow-iact/data``),
3. and else fills the cache from the eventio 0.11.0 source distribution (its ``eventio/resources``
   holds small sim_telarray files), fetched with ``pip download`` through the ordinary package index.
   A file of that sdist (`SIMTEL_FILES`...) missing from a partial ``$FLOW_DATA_DIR`` is fetched
   into the cache the same way; any other missing name is an error.

A config may write ``path: dataset:gamma_test.simtel.gz``; sources resolve it with `resolve_path`.
Raises `flow.errors.DataError` saying what to set when nothing works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from flow.errors import DataError

EVENTIO_SDIST = "eventio==0.11.0"
RESOURCES = "/eventio/resources/"
PREFIX = "dataset:"
# the sim_telarray files of the eventio 0.11.0 resources (cameras: see tests/test_stages_vs_ctapipe)
SIMTEL_FILES = (
    "gamma_test.simtel.gz",
    "gamma_test_large_truncated.simtel.gz",
    "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.gz",
    "gamma_20deg_0deg_run102___cta-prod4-sst-1m_desert-2150m-Paranal-sst-1m.simtel.zst",
    "gamma_20deg_0deg_run103___cta-prod4-sst-astri_desert-2150m-Paranal-sst-astri.simtel.gz",
)


def cache_dir() -> Path:
    """The per-user cache directory for downloaded data (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flow-iact" / "data"


def data_dir() -> Path:
    """The directory holding the datasets: $FLOW_DATA_DIR, else the (filled) user cache."""
    env = os.environ.get("FLOW_DATA_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DataError(f"FLOW_DATA_DIR={env} is not a directory; point it at the data files")
        return path
    cache = cache_dir()
    if not (cache.is_dir() and any(cache.iterdir())):
        download_resources(cache)
    return cache


def find_dataset(name: str) -> Path:
    """Path of the dataset file ``name``; DataError (saying what to set) if it cannot be found."""
    searched = []
    env = os.environ.get("FLOW_DATA_DIR")
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(cache_dir())
    for directory in candidates:
        searched.append(str(directory))
        if (directory / name).is_file():
            return directory / name
    if not env or name in SIMTEL_FILES:
        try:
            download_resources(cache_dir())
        except DataError as exc:
            raise DataError(f"dataset '{name}' not found in {searched} and {exc}") from None
        if (cache_dir() / name).is_file():
            return cache_dir() / name
    raise DataError(
        f"dataset '{name}' not found (looked in {', '.join(searched)}); set FLOW_DATA_DIR to a "
        f"directory holding it, or put it in {cache_dir()}")


def resolve_path(path: str | os.PathLike) -> Path:
    """``dataset:NAME`` -> find_dataset(NAME); anything else -> the path itself (user-expanded)."""
    text = str(path)
    if text.startswith(PREFIX):
        return find_dataset(text[len(PREFIX):])
    return Path(text).expanduser()


def download_resources(target: Path) -> list[Path]:
    """Fetch the eventio sdist with pip and extract its resources into ``target``."""
    with tempfile.TemporaryDirectory(prefix="flow-data-") as tmp:
        # "--no-binary eventio", not ":all:": the latter also forces pip to build eventio's
        # build dependencies (numpy...) from source just to read the sdist's metadata, and fails.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
               EVENTIO_SDIST.split("==")[0], EVENTIO_SDIST, "-d", tmp, "-q"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"could not run pip to download {EVENTIO_SDIST} ({exc}); "
                            "set FLOW_DATA_DIR to a directory holding the data files") from None
        sdists = sorted(Path(tmp).glob("eventio-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise DataError(f"downloading {EVENTIO_SDIST} failed ({proc.stderr.strip()[-300:]}); "
                            "set FLOW_DATA_DIR to a directory holding the data files")
        return extract_resources(sdists[0], target)


def extract_resources(archive: Path, target: Path) -> list[Path]:
    """Extract the regular files under ``*/eventio/resources/`` of a tar.gz, flat, into ``target``.

    Only the base name of each member is used, so no member can write outside ``target``.
    """
    target.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = "/" + member.name.lstrip("./")
                if not member.isfile() or RESOURCES not in name:
                    continue
                base = Path(member.name).name
                if not base or base.startswith("."):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                part = target / (base + ".part")
                with src, open(part, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                part.replace(target / base)
                written.append(target / base)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract data from {archive}: {exc}") from None
    if not written:
        raise DataError(f"{archive} holds no eventio/resources files")
    return written
