"""Load the jitted kernels workers use from numba's on-disk cache, ahead of any call.

numba loads a ``cache=True`` kernel's machine code on its first call with a given signature. A worker
pays that in its steps' set-up (the DL2 chain: about 0.7 s of CPU per worker, more than its
imports). The worker template (`flow.engine.zygote`) calls `load_used` once, after importing the
steps' modules: every worker it forks then starts with its kernels in memory, shared copy-on-write.

Which ones: the cache holds every signature a kernel was ever compiled for (`stages.warm` compiles
each for writable arrays, for read-only ones as they arrive from the wire, and for the mix of a
fused chain: 47 for the stage library), and loading one costs about 12 ms, so loading them all
would cost the template more than the workers save. Each worker records at its end which
signatures it ran (`record_used`, in ``$NUMBA_CACHE_DIR/flow-kernels-used.json``), and the template
loads those only. A first run records, every later one starts warm. An entry for another machine,
another numba or older source is skipped, and nothing is ever compiled here.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["load_used", "record_used"]

MANIFEST = "flow-kernels-used.json"


def manifest_path() -> str | None:
    """Where workers record the signatures they ran (None without ``NUMBA_CACHE_DIR``)."""
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    return os.path.join(cache_dir, MANIFEST) if cache_dir else None


def dispatchers() -> dict[str, object]:
    """``module.qualname`` -> numba dispatcher, for every kernel with a disk cache found in the
    loaded modules (none if numba was not imported)."""
    if "numba" not in sys.modules:
        return {}
    from numba.core.dispatcher import Dispatcher
    found: dict[str, object] = {}
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, Dispatcher) and \
                    type(getattr(value, "_cache", None)).__name__ == "FunctionCache":
                py_func = value.py_func
                found.setdefault(f"{py_func.__module__}.{py_func.__qualname__}", value)
    return found


def read_manifest(path: str | None) -> dict[str, list[str]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_used(path: str | None = None) -> int:
    """Add the signatures this process's kernels ran to the manifest; the number added. Never
    raises: a manifest it cannot write only means the next run's workers load their kernels
    themselves. Two workers ending together may each write their own view: a lost entry is
    recorded next run."""
    try:
        return _record_used(path or manifest_path())
    except Exception:
        return 0


def _record_used(path: str | None) -> int:
    if path is None:
        return 0
    used = {name: [str(sig) for sig in d.overloads] for name, d in dispatchers().items()
            if d.overloads}
    known = read_manifest(path)
    added = 0
    for name, sigs in used.items():
        have = set(known.get(name, ()))
        new = [s for s in sigs if s not in have]
        if new:
            known[name] = sorted(have.union(new))
            added += len(new)
    if added:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(known, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    return added


def cached_signatures(dispatcher) -> list:
    """The signatures ``dispatcher``'s cache holds for this machine, numba and source code."""
    cache = dispatcher._cache
    try:
        index = cache._cache_file._load_index()
    except Exception:   # unreadable or from another numba: the first call compiles, as before
        return []
    codegen = dispatcher.targetctx.codegen()
    return [key[0] for key in index if cache._index_key(key[0], codegen) == key]


def load_used(path: str | None = None) -> int:
    """Load from numba's cache the overloads the manifest lists for the loaded kernels; the number
    loaded. One that fails to load is left to its first call."""
    wanted = read_manifest(path or manifest_path())
    loaded = 0
    for name, dispatcher in dispatchers().items():
        sigs = set(wanted.get(name, ()))
        if not sigs:
            continue
        for sig in cached_signatures(dispatcher):
            if str(sig) not in sigs or sig in dispatcher.overloads:
                continue
            try:
                cres = dispatcher._cache.load_overload(sig, dispatcher.targetctx)
            except Exception:
                continue
            if cres is not None:   # as numba's own cache hit (Dispatcher.compile) registers it
                if not cres.objectmode:   # a kernel compiled later may call it: it links this one
                    dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc,
                                                              [cres.library])
                dispatcher.add_overload(cres)
                loaded += 1
    return loaded
