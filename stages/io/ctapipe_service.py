"""ctapipe's service tables: the counts of the quality queries, added up over the stream.

``ctapipe-process`` writes, at the end of a run, ``QualityQuery.to_table(functions=True)`` of its
ImageQualityQuery to ``/dl1/service/image_statistics`` and of each reconstructor's
StereoQualityQuery to ``/dl2/service/tel_event_statistics/<reconstructor>``: one row per criterion
(``TOTAL`` first) with ``criteria``, ``counts``, ``cumulative_counts`` and ``func`` (the expression).

flow's steps put one event's counts under ``event["quality_counts"]`` (`stages.quality`:
``"image"`` from stages.image, ``"stereo"`` from QualityCuts). A writer adds them up in a
`QueryTotals` as the events pass and `write_statistics` stores the totals at teardown; in append
mode (a resumed run) the counts already in the file are added, so the table holds the whole run.
"""

from __future__ import annotations

import numpy as np
import tables

from ..quality import add_counts
from .ctapipe_layout import with_strings, write_table

IMAGE_STATISTICS = "dl1/service/image_statistics"
TEL_EVENT_STATISTICS = "dl2/service/tel_event_statistics/{algo}"
COLUMNS = ("criteria", "counts", "cumulative_counts", "func")


class QueryTotals:
    """Sums of the per-event `stages.quality.query_counts` records, by query name."""

    def __init__(self) -> None:
        self.totals: dict[str, dict] = {}

    def add(self, quality_counts: dict) -> None:
        for query, counts in (quality_counts or {}).items():
            self.totals[query] = add_counts(self.totals.get(query), counts)


def statistics_rows(kind: str, counts: dict, algo: str = "") -> np.ndarray:
    """The table of one query's counts (string columns as wide as their longest value)."""
    return with_strings(kind, {name: list(counts[name]) for name in COLUMNS}, algo)


def read_counts(node: tables.Table) -> dict:
    """The counts record of a service table (as `stages.quality.query_counts` returns it)."""
    data = node.read()
    return {name: [v.decode() if isinstance(v, bytes) else int(v) for v in data[name]]
            for name in COLUMNS}


def write_statistics(h5: tables.File, kind: str, counts: dict, algo: str = "",
                     filters=None) -> None:
    """Store ``counts`` (plus those already in the file) as the service table of ``kind``."""
    path = "/" + kind.replace("{algo}", algo)
    if path in h5:
        counts = add_counts(read_counts(h5.get_node(path)), counts)
        h5.remove_node(path)
    write_table(h5, path, kind, statistics_rows(kind, counts, algo), algo, filters=filters)
