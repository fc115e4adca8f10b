"""Live terminal display of a running coordinator (rich): done / failed / queued, throughput, ETA."""

from __future__ import annotations

import statistics
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["LiveDisplay", "summary_table"]


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "—"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def summary_table(coordinator: Any) -> Table:
    """One table with the project's counts, throughput, latency, ETA and per-stage times."""
    counts = coordinator.store.counts()
    stats = coordinator.stats
    rate_h = stats.throughput_per_hour()
    remaining = counts["queued"] + counts["running"]
    eta = remaining / rate_h * 3600 if rate_h > 0 else None
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "done",
        f"[green]{counts['done']}[/green]  (selected {counts['selected']}, "
        f"filtered out {counts['filtered_out']}, excluded {counts['excluded']})",
    )
    table.add_row("failed", f"[red]{counts['failed']}[/red]" if counts["failed"] else "0")
    table.add_row("running / queued", f"{counts['running']} / {counts['queued']}")
    table.add_row("particles", f"{counts['particles_selected']} selected of {counts['particles']}")
    table.add_row("throughput", f"{rate_h:.0f} movies/h" if rate_h else "—")
    if stats.latencies_s:
        table.add_row("latency", f"median {statistics.median(stats.latencies_s):.1f} s from readable to STAR")
    table.add_row("ETA (queue)", _fmt_duration(eta))
    if stats.stage_times_s:
        parts = [f"{k} {statistics.median(v):.1f}" for k, v in stats.stage_times_s.items()]
        table.add_row("stage s (median)", ", ".join(parts))
    table.add_row("executor", coordinator.executor_name)
    return table


class LiveDisplay:
    """Context manager showing :func:`summary_table` plus recent messages, refreshed twice a second.

    Parameters
    ----------
    title : str
        Panel title (e.g. the project folder).
    enabled : bool
        False prints nothing live (a final summary is still printed by the caller).
    console : rich.console.Console, optional
    plain : bool
        With ``enabled=False``: print one timestamped line per finished item and every coordinator
        message instead (for a log file, where a live panel cannot be drawn).
    """

    def __init__(
        self, title: str, *, enabled: bool = True, console: Console | None = None, plain: bool = False
    ):
        self.title = title
        self.enabled = enabled
        self.plain = plain and not enabled
        self.console = console or Console(stderr=True)
        self._coordinator: Any = None
        self._live: Live | None = None
        self._last = 0.0
        self._n_printed = 0  # coordinator messages printed (plain)
        self._n_finished = 0  # items finished when the last plain line was printed

    def _print_plain(self, coordinator: Any) -> None:
        new = coordinator.n_messages - self._n_printed
        if new > 0:
            for message in coordinator.messages[-min(new, len(coordinator.messages)) :]:
                self.console.print(
                    f"{time.strftime('%H:%M:%S')} {message}", markup=False, highlight=False, soft_wrap=True
                )
            self._n_printed = coordinator.n_messages
        finished = coordinator.stats.finished + coordinator.stats.failed_now
        if finished != self._n_finished:
            self._n_finished = finished
            c = coordinator.store.counts()
            self.console.print(
                f"{time.strftime('%H:%M:%S')} done {c['done']}, failed {c['failed']}, "
                f"running {c['running']}, queued {c['queued']}, particles {c['particles_selected']} selected",
                markup=False,
                highlight=False,
            )

    def _render(self) -> Panel:
        if self._coordinator is None:
            return Panel(Text("starting…"), title=self.title)
        body = [summary_table(self._coordinator)]
        messages = self._coordinator.messages[-5:]
        if messages:
            body.append(Text("\n".join(messages), style="dim"))
        return Panel(Group(*body), title=self.title, border_style="cyan")

    def update(self, coordinator: Any) -> None:
        """``Coordinator.on_update`` callback (throttled to 4 Hz)."""
        self._coordinator = coordinator
        if self.plain:
            self._print_plain(coordinator)
        now = time.monotonic()
        if self._live is not None and now - self._last > 0.25:
            self._last = now
            self._live.update(self._render())

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            self._live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=2,
                get_renderable=self._render,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None
