"""No tracked file names a machine's home, work or temporary directory.

A path like that works on the machine that wrote it and nowhere else: data is found through
`stages.datasets`, caches through environment variables, the repository through ``__file__``.
The few paths below are not a machine's: they live inside the container image or are test values.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Directory names only (no slashes here, so this file does not name them itself).
HOMES = ("home", "Users")                                  # followed by a user name
DIRS = ("root", "work", "scratch", "workspace",            # root's home, shared work areas
        "tmp", "var/tmp", "var/folders", "private/var")    # temporary directories
# An absolute path starting at one of them (not `x/work/`, not `~/`, not `ipc:///...`).
MACHINE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:(?:" + "|".join(HOMES) + r")/[A-Za-z_]"
    + r"|(?:" + "|".join(map(re.escape, DIRS)) + r")/)"
    + r"|[A-Za-z]:\\{1,2}Users\\")                          # a Windows home

ALLOWED = {  # (file, text on the line): why it is not a machine's path
    ("docker/Dockerfile", "NUMBA_CACHE_DIR="): "inside the container image",
    ("docker/Dockerfile", "MPLCONFIGDIR="): "inside the container image",
}


def tracked_files() -> list[Path]:
    """The files git tracks (every file under the root outside caches when git is not there)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".cache", "out", "build", "__pycache__"}
        return [p for p in ROOT.rglob("*")
                if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def machine_paths(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of each line of a text file naming a machine's directory."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):  # binary files (images) hold no paths to fix
        return []
    rel = path.relative_to(ROOT).as_posix()
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if MACHINE_PATH.search(line)
            and not any(f == rel and s in line for f, s in ALLOWED)]


def test_no_tracked_file_names_a_machine_directory():
    files = tracked_files()
    assert len(files) > 50 and ROOT / "README.md" in files
    found = [f"{p.relative_to(ROOT)}:{n}: {line}" for p in files for n, line in machine_paths(p)]
    assert not found, "absolute paths of a machine (use stages.datasets, env vars or __file__):\n" \
        + "\n".join(found)


def test_the_pattern_catches_what_it_should():
    bad = ["DATA = Path('" + "/" + "work/shared/data')", "cd " + "/" + "home/alice/flow",
           "NUMBA_CACHE_DIR=" + "/" + "tmp/x", "open('" + "/" + "Users/bob/x')",
           "x = '" + "/" + "root/.cache'", "C:" + "\\Users\\eve"]
    good = ["flow/engine/worker.py", "~/.cache/flow-iact/data", "ipc://" + "@flow",
            "$(CURDIR)/.cache/numba", "see docs/work/notes", "tcp://127.0.0.1:5555"]
    assert all(MACHINE_PATH.search(b) for b in bad), [b for b in bad if not MACHINE_PATH.search(b)]
    assert not any(MACHINE_PATH.search(g) for g in good), [g for g in good
                                                           if MACHINE_PATH.search(g)]
