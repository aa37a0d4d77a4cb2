"""Re-read DL1 files written by `stages.io.hdf5.DL1Writer` as events, to re-process DL1.

`DL1Source` yields one event per (obs_id, event_id) in the event layout of docs/event-schema.md:
``tels[tel_id]["params"]`` from ``/dl1/event/telescope/parameters``, ``image``/``peak_time``/``mask``
from ``/dl1/event/telescope/images`` when the file has them, ``true_image`` and ``simulation`` from
``/simulation``. Its context is the one the writer stored under ``/configuration/flow/context``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import tables

from flow.errors import DataError
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Keyed, Producer

from ..datasets import resolve_path
from .hdf5 import (
    _SIM_FIELDS,
    CONTEXT_PATH,
    IMAGES_PATH,
    PARAMS_PATH,
    SHOWER_PATH,
    TRUE_IMAGES_PATH,
    read_context,
)

_IDS = ("obs_id", "event_id", "tel_id")


def _unfilled(column: np.ndarray) -> bool:
    """A column no step filled: all at ctapipe's default (NaN, or -1 for integers)."""
    if column.dtype.kind == "f":
        return bool(np.isnan(column).all())
    return column.dtype.kind == "i" and bool((column == -1).all())


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


class DL1Source(Producer):
    """Events of a DL1 HDF5 file written by DL1Writer (parameters, images when present)."""

    replayable = True

    path = Param(str, REQUIRED, "DL1 HDF5 file written by stages.io.hdf5:DL1Writer")
    max_events = Param(int, 0, "stop after this many events (0 = all)")
    read_images = Param(bool, True, "read images (and true images) when the file has them")

    def _open(self) -> tables.File:
        path = resolve_path(self.path)
        try:
            return tables.open_file(path, "r")
        except (OSError, tables.HDF5ExtError) as exc:
            raise DataError(f"cannot open DL1 file {path}: {exc}") from None

    def publish_context(self) -> dict:
        with self._open() as h5:
            context = read_context(h5.get_node(CONTEXT_PATH)) if CONTEXT_PATH in h5 else {}
        context["provenance"] = {"input_files": [str(resolve_path(self.path))]}
        return context

    def total(self) -> int | None:
        with self._open() as h5:
            n = len(self._event_ids(h5))
        return min(n, self.max_events) if self.max_events else n

    @staticmethod
    def _tel_tables(h5, where: str) -> dict[int, tables.Table]:
        if where not in h5:
            return {}
        return {int(node._v_name[4:]): node for node in h5.get_node(where)._f_iter_nodes("Table")}

    def _event_ids(self, h5) -> list[tuple[int, int]]:
        seen: dict[tuple[int, int], None] = {}
        if SHOWER_PATH in h5:
            t = h5.get_node(SHOWER_PATH)
            seen.update(dict.fromkeys(zip(t.col("obs_id").tolist(), t.col("event_id").tolist(), strict=True)))
        for where in (PARAMS_PATH, IMAGES_PATH):
            for t in self._tel_tables(h5, where).values():
                seen.update(dict.fromkeys(zip(t.col("obs_id").tolist(), t.col("event_id").tolist(), strict=True)))
        return sorted(seen)

    def process(self) -> Iterator[Keyed]:
        with self._open() as h5:
            events = self._read(h5)
        for n, ((obs_id, event_id), event) in enumerate(sorted(events.items())):
            if self.max_events and n >= self.max_events:
                return
            yield Keyed(f"{obs_id}:{event_id}", event)

    def _read(self, h5) -> dict:
        events: dict = {}

        def event_of(obs_id, event_id):
            return events.setdefault((obs_id, event_id), {
                "obs_id": obs_id, "event_id": event_id, "tels": defaultdict(dict)})

        for (obs_id, event_id) in self._event_ids(h5):
            event_of(obs_id, event_id)
        if SHOWER_PATH in h5:
            for row in h5.get_node(SHOWER_PATH).read():
                sim = {}
                for key, (col, _, factor) in _SIM_FIELDS.items():
                    if col in row.dtype.names:
                        value = _scalar(row[col])
                        sim[key] = value / factor if factor != 1 else value
                event_of(int(row["obs_id"]), int(row["event_id"]))["simulation"] = sim
        for tel_id, table in self._tel_tables(h5, PARAMS_PATH).items():
            rows = table.read()
            names = [n for n in table.colnames if n not in _IDS and not _unfilled(rows[n])]
            for row in rows:
                tel = event_of(int(row["obs_id"]), int(row["event_id"]))["tels"][tel_id]
                tel["params"] = {n: _scalar(row[n]) for n in names}
        if self.read_images:
            for tel_id, table in self._tel_tables(h5, IMAGES_PATH).items():
                for row in table.read():
                    tel = event_of(int(row["obs_id"]), int(row["event_id"]))["tels"][tel_id]
                    tel["image"], tel["peak_time"] = row["image"].copy(), row["peak_time"].copy()
                    tel["mask"] = row["image_mask"].copy()
            for tel_id, table in self._tel_tables(h5, TRUE_IMAGES_PATH).items():
                if "true_image" not in table.colnames:  # ctapipe's layout: only true_image_sum
                    continue
                for row in table.read():
                    tel = event_of(int(row["obs_id"]), int(row["event_id"]))["tels"][tel_id]
                    tel["true_image"] = row["true_image"].copy()
        for event in events.values():
            event["tels"] = dict(event["tels"])
        return events
