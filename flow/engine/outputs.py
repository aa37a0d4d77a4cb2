"""How a step's return value becomes routed outputs; shared by the workers and the inline runner.

Keys: a single output keeps its input's key; several outputs get ``key/0``, ``key/1``... so a
redelivered event yields the same keys again (deterministic steps give exactly-once output after the
consumers' de-duplication). A producer's event gets its `Keyed` key or ``"<step>:<n>"``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

from flow.errors import StepError
from flow.graph.step import Keyed, To, iter_outputs

ALL = ""  # target meaning "every downstream step"


def stager_outputs(result: Any, key: str, step: str, targets: tuple[str, ...]
                   ) -> list[tuple[str, str, Any]]:
    """``[(key, target, event), ...]`` for a stager's return value (target ALL = fan out)."""
    if type(result) is dict:  # the common case: one event, to every downstream step
        return [(key, ALL, result)]
    outs = list(iter_outputs(result))
    many = len(outs) > 1
    routed = []
    for i, out in enumerate(outs):
        k = f"{key}/{i}" if many else key
        routed.append(_route(out, k, step, targets))
    return routed


def _route(out: Any, key: str, step: str, targets: tuple[str, ...]) -> tuple[str, str, Any]:
    if isinstance(out, To):
        if out.target not in targets:
            raise StepError(step, "process",
                            f"routed an event to '{out.target}', which is not one of its targets "
                            f"{list(targets)}; add it to the step's 'to' list")
        return key, out.target, out.event
    return key, ALL, out


def producer_outputs(events, step: str, targets: tuple[str, ...], start: int = 0,
                     shard: tuple[int, int] | None = None) -> Iterator[tuple[str, str, Any]]:
    """Stream ``(key, target, event)`` from a producer's generator.

    With ``shard=(i, n)`` only the events whose key hashes to ``i`` modulo ``n`` are kept: ``n``
    independent runs (routers) of the same graph then share the stream without overlap.
    """
    n = start
    for ev in events:
        if ev is None:
            continue
        if isinstance(ev, Keyed):
            key, ev = str(ev.key), ev.event
        else:
            key = f"{step}:{n}"
        n += 1
        if shard is not None and in_shard(key, shard) is False:
            continue
        yield _route(ev, key, step, targets)


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether ``key`` belongs to shard ``(i, n)`` (a stable hash: crc32 of the key)."""
    i, n = shard
    return zlib.crc32(key.encode()) % n == i


def path_after(path: str, step_index: int) -> str:
    """The path of an event that left step ``step_index`` having come along ``path``."""
    return f"{path}.{step_index}" if path else str(step_index)
