"""The live terminal view of `flow run`: one line per step that fits the terminal, then a summary.

`render(record, width)` lays the step table out for ``width`` columns: each step on one line, its
name whole or cut in the middle (still unique), numbers humanised (``1.2k``, ``3.4 MB``). Columns
give way in order of value when the terminal is narrow: the rate, queue, workers and busy columns
stay; kind and in-flight go first; a wide terminal adds latency percentiles and retries. With
``final`` (after the run) the rate column is each step's average over the run, workers the peak
count and busy the mean over the run, next to the totals in and out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

GAP = 2  # spaces between columns


def fmt_count(n: float) -> str:
    """12, 999, 1.2k, 34k, 1.2M ... (at most 4 characters up to 999G)."""
    n = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale * 0.9995:
            v = n / scale
            return f"{v:.1f}{unit}" if abs(v) < 9.95 else f"{v:.0f}{unit}"
    return f"{n:.0f}"


def fmt_rate(r: float) -> str:
    """Events per second: 0, 0.4, 9.5, 532, 1.2k."""
    return "0" if r == 0 else f"{r:.1f}" if abs(r) < 9.95 else fmt_count(r)


def fmt_bytes(n: float) -> str:
    """0 B, 512 B, 3.4 KB, 12 MB, 1.2 GB (powers of 1024)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            if unit == "B":
                return f"{n:.0f} B"
            return f"{n:.1f} {unit}" if abs(n) < 9.95 else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} GB"  # pragma: no cover


def fmt_ms(ms: float) -> str:
    """Milliseconds: 0, 0.42, 4.2, 42, 1.2k."""
    return "0" if ms == 0 else f"{ms:.2f}" if ms < 0.995 else f"{ms:.1f}" if ms < 9.95 \
        else fmt_count(ms)


def middle_cut(names: list[str], width: int) -> dict[str, str]:
    """Each name in at most ``width`` characters: whole, or its head and tail around ``…``.

    The split nearest the middle that keeps every name distinct is taken (names that differ only
    near their end keep a longer tail); when none does, the tail gives way to a number.
    """
    out = {n: n for n in names if len(n) <= width}
    long = [n for n in names if len(n) > width]
    if not long:
        return out
    if width < 3:
        return {**out, **{n: n[:width] for n in long}}
    middle = width // 2
    heads = sorted(range(1, width - 1), key=lambda h: (abs(h - middle), -h))
    for head in heads:
        cuts = {n: n[:head] + "…" + n[len(n) - (width - 1 - head):] for n in long}
        if len(set(cuts.values()) | set(out.values())) == len(names):
            return {**out, **cuts}
    return {**out, **{n: n[:width - len(f"~{i + 1}")] + f"~{i + 1}" for i, n in enumerate(long)}}


@dataclass(frozen=True)
class Column:
    """One column: its header, how much it is worth keeping (higher stays longer), its cell."""

    header: str
    keep: int
    cell: Callable[[Mapping, bool], str]
    final_header: str | None = None


def _workers(s: Mapping, final: bool) -> str:
    n = s.get("workers_peak", s["workers"]) if final else s["workers"]
    if s["kind"] != "stager" or s["workers_min"] == s["workers_max"]:
        return str(n)
    return f"{n} [{s['workers_min']}-{s['workers_max']}]"


#: display order; ``keep`` ranks: rate, queue, workers, busy stay longest, kind and in-flight go first
COLUMNS = (
    Column("kind", 1, lambda s, f: s["kind"]),
    Column("fused", 3, lambda s, f: s.get("group") or ""),   # the chain a fused step runs in
    Column("in", 9, lambda s, f: fmt_count(s["in"])),
    Column("out", 10, lambda s, f: fmt_count(s["out"])),
    Column("rate/s", 14, lambda s, f: fmt_rate(s.get("rate_avg", 0.0) if f else s["rate"]),
           final_header="avg/s"),
    Column("queue", 13, lambda s, f: fmt_count(s["queue"])),
    Column("q size", 5, lambda s, f: fmt_bytes(s["queue_bytes"])),
    Column("inflight", 2, lambda s, f: fmt_count(s["inflight"])),
    Column("workers", 12, _workers, final_header="peak wk"),
    Column("busy", 11, lambda s, f: f"{s.get('busy_mean', s['busy']) if f else s['busy']:.0%}"),
    Column("p50 ms", 7, lambda s, f: fmt_ms(s["latency_p50_ms"])),
    Column("p99 ms", 3, lambda s, f: fmt_ms(s.get("latency_p99_ms", 0.0))),
    Column("errors", 8, lambda s, f: fmt_count(s["errors"])),
    Column("retries", 4, lambda s, f: fmt_count(s.get("retries", 0))),
    Column("dead", 6, lambda s, f: fmt_count(s["dead_letter"])),
)
NAME_MIN = 6   # a step name keeps at least this many characters before the valued columns go
NAME_KEEP = 9  # columns worth less than this go before a step name is cut below NAME_CUT
NAME_CUT = 18


def layout(steps: Mapping[str, Mapping], width: int, final: bool = False):
    """(name width, [(column, header, cell width, cells)]) of the columns that fit in ``width``.

    The least valued columns below NAME_KEEP go first, until names of NAME_CUT characters (or
    whole, if shorter) fit; the names take the room left, and are cut down to NAME_MIN before the
    valued columns go too. A wider terminal never shows fewer columns or shorter names.
    """
    cells = []
    for col in COLUMNS:
        header = (col.final_header or col.header) if final else col.header
        values = [col.cell(s, final) for s in steps.values()]
        cells.append((col, header, max(len(header), *map(len, values)), values))
    name_full = max([len("step"), *(len(n) + 2 for n in steps)])  # +2: the bottleneck mark " ◀"

    def used(cols) -> int:
        return sum(w + GAP for _, _, w, _ in cols)

    kept = sorted(cells, key=lambda c: -c[0].keep)
    while kept and kept[-1][0].keep < NAME_KEEP and used(kept) + min(name_full, NAME_CUT) > width:
        kept.pop()
    while kept and used(kept) + min(name_full, NAME_MIN) > width:
        kept.pop()
    return max(1, min(name_full, width - used(kept))), [c for c in cells if c in kept]


def step_table(record: Mapping, width: int, final: bool = False) -> list[Text]:
    """The header line, a rule and one line per step, none longer than ``width``."""
    steps = record["steps"]
    name_w, cols = layout(steps, width, final)
    full = max(len(n) for n in steps) + 2 <= name_w
    names = middle_cut(list(steps), name_w if full or name_w <= 4 else name_w - 2)
    head = Text("step".ljust(name_w), style="bold")
    for _, header, w, _ in cols:
        head.append(" " * GAP + header.rjust(w), style="bold")
    lines = [head, Text("─" * min(width, len(head.plain)), style="dim")]
    for i, (name, s) in enumerate(steps.items()):
        mark = " ◀" if s.get("bottleneck") and not final else ""
        line = Text((names[name] + mark).ljust(name_w)[:name_w],
                    style="bold red" if mark else None)
        for _, _, w, values in cols:
            line.append(" " * GAP + values[i].rjust(w))
        lines.append(line)
    return lines


def _title(record: Mapping, final: bool) -> Text:
    text = f"flow · {record.get('state', '?')} · {record['elapsed_s']:.1f} s"
    if final:
        elapsed = max(record["elapsed_s"], 1e-9)
        text += f" · {fmt_count(record.get('produced', 0))} events, " \
                f"{fmt_rate(record.get('produced', 0) / elapsed)}/s on average"
    return Text(text, style="bold", no_wrap=True, overflow="ellipsis")


def render(record: Mapping, width: int = 80, final: bool = False) -> Group:
    """A rich renderable for one stats record, laid out for ``width`` terminal columns."""
    title = _title(record, final)
    title.truncate(width, overflow="ellipsis")
    parts: list = [title, *step_table(record, width, final)]
    if record.get("progress") is not None and not final:
        eta = record.get("eta_s")
        label = (f"{record['progress'] * 100:.0f}%  {fmt_count(record['produced'])}/"
                 f"{fmt_count(record['total'])}" + (f"  ETA {eta:.0f} s" if eta is not None else ""))
        line = Table.grid(padding=1)
        line.add_row(ProgressBar(total=1.0, completed=record["progress"],
                                 width=max(10, min(40, width - len(label) - 2))), Text(label))
        parts.append(line)
    for d in list(record.get("decisions", []))[-3:]:
        text = Text(f"scaler: {d['step']} {d['old']} → {d['new']}: {d['reason']}", style="cyan",
                    no_wrap=True, overflow="ellipsis")
        text.truncate(width, overflow="ellipsis")
        parts.append(text)
    return Group(*parts)


class TermView:
    """Shows stats records live (unless quiet) on a rich console; the last one again as a summary."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self.last: dict | None = None
        self.peak: dict[str, int] = {}
        self.busy: dict[str, list[float]] = {}  # per step: sum of busy, records with workers

    def _track(self, record: dict) -> None:
        for name, s in record.get("steps", {}).items():
            self.peak[name] = max(self.peak.get(name, 0), s["workers"])
            if s["workers"] and not s.get("finished"):
                acc = self.busy.setdefault(name, [0.0, 0])
                acc[0] += s["busy"]
                acc[1] += 1

    def final_record(self) -> dict | None:
        """The last record with each step's peak workers and mean busy over the run."""
        if self.last is None:
            return None
        steps = {}
        for name, s in self.last["steps"].items():
            total, n = self.busy.get(name, (0.0, 0))
            steps[name] = {**s, "workers_peak": self.peak.get(name, s["workers"]),
                           "busy_mean": total / n if n else s["busy"]}
        return {**self.last, "steps": steps}

    def update(self, record: dict) -> None:
        self.last = record
        self._track(record)
        if self.quiet:
            return
        if self.live is None:
            self.live = Live(render(record, self.console.width), console=self.console,
                             auto_refresh=False, transient=False)
            self.live.start()
        self.live.update(render(record, self.console.width), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            final = self.final_record()
            if final is not None:
                self.live.update(render(final, self.console.width, final=True), refresh=True)
            self.live.stop()
            self.live = None

    def print_summary(self, summary) -> None:
        c = Console()
        t = Table(title="summary", title_justify="left", show_header=False)
        t.add_row("state", summary.state)
        t.add_row("produced", str(summary.produced))
        for name, n in summary.consumed.items():
            t.add_row(f"consumed by {name}",
                      f"{summary.unique_consumed.get(name, n)} unique ({n} delivered)")
        t.add_row("dead letters", str(summary.dead_letter)
                  + (f" → {summary.dead_letter_file}" if summary.dead_letter_file else ""))
        t.add_row("retries", str(summary.retries))
        t.add_row("workers started / retired",
                  f"{summary.workers_started} / {summary.workers_retired}")
        if summary.restarts:
            t.add_row("workers replaced", ", ".join(f"{k} {n}" for k, n in summary.restarts.items()))
        t.add_row("wall time", f"{summary.wall_s:.2f} s")
        for f in summary.failures:
            t.add_row("failure", Text(f, style="red"))
        for w in summary.warnings:
            t.add_row("warning", Text(w, style="yellow"))
        t.add_row("exit code", str(summary.exit_code))
        c.print(t)
