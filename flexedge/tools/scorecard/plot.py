"""`flexedge report --plot`: requested against delivered power per asset, with matplotlib
(an optional extra: imported only here, and only when a plot is asked for)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from flexedge.tools.scorecard.card import Scorecard
from flexedge.tools.scorecard.log_reader import (
    Baselines,
    ReportError,
    allocation_rows,
    telemetry_rows,
)

STATUS_COLOUR = {
    "delivered": "tab:green",
    "partial": "tab:orange",
    "failed": "tab:red",
    "open": "tab:gray",
}
PLOT_EXTRA = "--plot needs matplotlib, which is not installed: pip install 'flexedge[plot]'"


def require_matplotlib() -> None:
    """Fail before printing anything rather than after the scorecard."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError(PLOT_EXTRA)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _plot_range(conn: sqlite3.Connection, card: Scorecard) -> tuple[float, float]:
    if card.lines:
        lo = min(line.window_start for line in card.lines)
        hi = max(line.window_end for line in card.lines)
    else:
        lo, hi = conn.execute("SELECT MIN(ts), MAX(ts) FROM telemetry").fetchone()
        if lo is None:
            raise ReportError(f"{card.db}: nothing to plot (no commitments, no telemetry)")
    margin = max(5.0, 0.05 * (hi - lo))
    return lo - margin, hi + margin


def plot_log(conn: sqlite3.Connection, card: Scorecard, out: Path) -> None:
    """Per asset: the allocated (requested) and measured (delivered) kW above baseline, with
    each commitment's window shaded in the colour of its status."""
    # Its first run logs building a font cache at info: noise in a report's output.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on a gateway; only files
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError(PLOT_EXTRA) from exc
    lo, hi = _plot_range(conn, card)
    assets = sorted({a for line in card.lines for a in line.baselines_kw}) or [
        row[0] for row in conn.execute("SELECT DISTINCT asset FROM telemetry ORDER BY asset")
    ]
    baselines = Baselines(conn)
    fig, axes = plt.subplots(
        len(assets), 1, sharex=True, squeeze=False, figsize=(11, 0.8 + 2.8 * len(assets))
    )
    for ax, asset in zip(axes[:, 0], assets, strict=True):
        rows = allocation_rows(conn, asset, lo, hi)
        if rows:
            totals_kw = [sum(alloc.values()) for _, alloc in rows]
            ax.step(
                [_when(ts) for ts, _ in rows] + [_when(hi)],
                [*totals_kw, totals_kw[-1]],
                where="post",
                color="tab:blue",
                lw=1.8,
                label="requested: allocated kW above baseline",
            )
        times: list[datetime] = []
        delta: list[float] = []
        previous = None
        for ts, p_kw in telemetry_rows(conn, asset, lo, hi):
            if previous is not None and ts - previous > card.max_gap_s:
                times.append(_when((ts + previous) / 2))
                delta.append(float("nan"))  # break the line: nothing was measured there
            previous = ts
            times.append(_when(ts))
            delta.append(p_kw - (baselines.at(asset, ts) or 0.0))
        ax.plot(
            times,
            delta,
            color="tab:orange",
            lw=1.1,
            marker=".",
            ms=3,
            label="delivered: measured kW minus baseline",
        )
        if not times:
            ax.text(
                0.5,
                0.5,
                "no telemetry in the log",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="tab:gray",
            )
        for line in card.lines:
            if asset not in line.baselines_kw:
                continue
            ax.axvspan(
                _when(line.window_start),
                _when(line.window_end),
                alpha=0.13,
                color=STATUS_COLOUR.get(line.status, "tab:gray"),
            )
            ax.annotate(
                f"{line.id}\n{line.status}",
                (_when(line.window_start), 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                fontsize=7,
            )
        ax.axhline(0.0, color="black", lw=0.5)
        ax.set_title(asset, loc="left", fontsize=10)
        ax.set_ylabel("kW")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    bottom = axes[-1, 0]
    bottom.set_xlim(_when(lo), _when(hi))
    # matplotlib.dates ships without annotations for DateFormatter's constructor.
    hms = mdates.DateFormatter("%H:%M:%S", tz=UTC)  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_formatter(hms)
    bottom.set_xlabel("time (UTC)")
    fig.suptitle(f"requested vs delivered power: {Path(card.db).name}")
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
