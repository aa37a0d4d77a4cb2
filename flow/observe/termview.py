"""The live terminal view of `flow run`: a rich table per step, a progress bar, then a summary."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def _fmt_rate(r: float) -> str:
    return f"{r / 1000:.1f}k" if r >= 10_000 else f"{r:.0f}" if r >= 10 else f"{r:.1f}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f}{unit}"
        n /= 1024
    return f"{n:.0f}TB"


def render(record: dict) -> Group:
    """A rich renderable for one stats record."""
    table = Table(title=f"flow · {record.get('state', '?')} · {record['elapsed_s']:.1f} s",
                  expand=False, title_justify="left")
    for col in ("step", "kind", "in", "out", "rate/s", "queue", "inflight", "workers", "busy",
                "p50 ms", "errors", "dead"):
        table.add_column(col, justify="left" if col in ("step", "kind") else "right")
    for name, s in record["steps"].items():
        style = "bold red" if s.get("bottleneck") else None
        workers = f"{s['workers']}" if s["kind"] != "stager" else \
            f"{s['workers']} ({s['workers_min']}–{s['workers_max']})"
        group = f" ⊂{s['group']}" if s.get("group") and s["group"] != name else ""   # fused
        table.add_row(name + group + (" ◀ bottleneck" if s.get("bottleneck") else ""), s["kind"],
                      str(s["in"]), str(s["out"]), _fmt_rate(s["rate"]),
                      f"{s['queue']} / {_fmt_bytes(s['queue_bytes'])}", str(s["inflight"]),
                      workers, f"{s['busy'] * 100:.0f}%", f"{s['latency_p50_ms']:.2f}",
                      str(s["errors"]), str(s["dead_letter"]), style=style)
    parts = [table]
    if record.get("progress") is not None:
        eta = record.get("eta_s")
        line = Table.grid(padding=1)
        line.add_row(ProgressBar(total=1.0, completed=record["progress"], width=40),
                     Text(f"{record['progress'] * 100:.0f}%  {record['produced']}/{record['total']}"
                          + (f"  ETA {eta:.0f} s" if eta is not None else "")))
        parts.append(line)
    for d in record.get("decisions", []):
        parts.append(Text(f"scaler: {d['step']} {d['old']} → {d['new']}: {d['reason']}",
                          style="cyan"))
    return Group(*parts)


class TermView:
    """Shows stats records live (unless quiet) on a rich console."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.live: Live | None = None
        self.last: dict | None = None

    def update(self, record: dict) -> None:
        self.last = record
        if self.quiet:
            return
        if self.live is None:
            self.live = Live(render(record), console=self.console, auto_refresh=False,
                             transient=False)
            self.live.start()
        self.live.update(render(record), refresh=True)

    def close(self) -> None:
        if self.live is not None:
            if self.last is not None:
                self.live.update(render(self.last), refresh=True)
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
        t.add_row("wall time", f"{summary.wall_s:.2f} s")
        for f in summary.failures:
            t.add_row("failure", Text(f, style="red"))
        t.add_row("exit code", str(summary.exit_code))
        c.print(t)
