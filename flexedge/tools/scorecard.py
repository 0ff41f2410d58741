"""`flexedge report`: a scorecard of every commitment in a SQLite log, and an optional plot.

The shell around controller/core/scoring.py: it reads the log read-only (a running daemon may
keep writing to it), turns rows into plain data, and renders. Baselines come from the delivery
reports (each asset's baseline at its window's start), since the log has no site file.
"""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import statistics
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flexedge.controller.core.health import STALE_PERIODS
from flexedge.controller.core.model import Commitment, Progress, RefType
from flexedge.controller.core.reports import coverage, reported_assets
from flexedge.controller.core.scoring import (
    DELAY_MAX_S,
    TOLERANCE,
    AssetTrace,
    Score,
    score_commitment,
)
from flexedge.errors import FlexedgeError

# What the report reads; a file without these is not a flexedge log.
REQUIRED = {
    "commitments": {
        "id",
        "ref",
        "ref_type",
        "window_start",
        "window_end",
        "requested_kwh",
        "accepted_kwh",
        "shares",
        "settlement",
        "delivered_kwh",
        "covered_s_by_asset",
        "by_asset",
        "state",
    },
    "setpoints": {"ts", "asset", "allocations"},
    "telemetry": {"ts", "asset", "p_kw"},
    "reports": {"commitment_id", "payload"},
}
# Settlement is in the market's own unit (model.Commitment): never add the two kinds up.
SETTLEMENT_UNIT = {"balancing_trade": "ct", "balancing_control": "(event payments)"}


class ReportError(FlexedgeError):
    """The log cannot be read or plotted; the message names the file."""


@contextmanager
def open_log(path: Path) -> Iterator[sqlite3.Connection]:
    """The log, read-only, after checking it is a flexedge log."""
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    # mode=ro: the report must never write, not even create a table, in a daemon's log.
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            tables = {
                name: {col[1] for col in conn.execute(f"PRAGMA table_info({name})")}
                for name in REQUIRED
            }
        except sqlite3.DatabaseError as exc:
            raise ReportError(f"{path}: not a flexedge log ({exc})") from exc
        missing = []
        for table, cols in REQUIRED.items():
            if not tables[table]:
                missing.append(f"table {table}")
            else:
                missing += [f"{table}.{col}" for col in sorted(cols - tables[table])]
        if missing:
            raise ReportError(f"{path}: not a flexedge log (missing {', '.join(missing)})")
        yield conn
    finally:
        conn.close()


@dataclass(frozen=True)
class Line:
    """One commitment of the scorecard."""

    id: str
    ref: str
    ref_type: str
    window_start: float
    window_end: float
    requested_kwh: float
    accepted_kwh: float
    delivered_kwh: float
    status: str  # the report's status, or "open" before it is reported
    coverage: float
    settlement: float | None  # None while open: nothing is settled yet
    baselines_kw: dict[str, float]
    baseline_assumed: tuple[str, ...]  # assets no report gave a baseline for (0 kW taken)
    score: Score


@dataclass(frozen=True)
class Scorecard:
    db: str
    control_period_s: float
    max_gap_s: float
    delay_max_s: float
    lines: list[Line]


class Baselines:
    """Each asset's baseline as the delivery reports state it, per commitment and in time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.by_commitment: dict[str, dict[str, float]] = {}
        self.by_asset: dict[str, list[tuple[float, float]]] = {}
        rows = conn.execute(
            "SELECT r.commitment_id, r.payload, c.window_start FROM reports r "
            "JOIN commitments c ON c.id = r.commitment_id ORDER BY c.window_start"
        )
        for cid, payload, start in rows:
            assets = {
                a["asset"]: float(a["baseline_kw"]) for a in json.loads(payload).get("assets", [])
            }
            self.by_commitment[cid] = assets
            for asset, kw in assets.items():
                self.by_asset.setdefault(asset, []).append((start, kw))

    def at(self, asset: str, ts: float) -> float | None:
        """The baseline of the last window on the asset started by ts (else the first)."""
        known = self.by_asset.get(asset)
        if not known:
            return None
        return next((kw for start, kw in reversed(known) if start <= ts), known[0][1])

    def for_commitment(self, cid: str, asset: str, ts: float) -> float | None:
        own = self.by_commitment.get(cid, {})
        return own[asset] if asset in own else self.at(asset, ts)


def control_period(conn: sqlite3.Connection) -> float:
    """The median spacing of recent control ticks (the log does not record the setting)."""
    for sql in (
        "SELECT DISTINCT ts FROM setpoints WHERE cause = 'tick' ORDER BY ts DESC LIMIT 1001",
        "SELECT DISTINCT ts FROM telemetry ORDER BY ts DESC LIMIT 1001",
    ):
        stamps = [row[0] for row in conn.execute(sql)]
        gaps = [a - b for a, b in itertools.pairwise(stamps) if a > b]
        if gaps:
            return float(statistics.median(gaps))
    return 1.0


def _allocation_rows(
    conn: sqlite3.Connection, asset: str, start: float, end: float
) -> list[tuple[float, dict[str, float]]]:
    """Setpoint rows in [start, end), from the one in force at start."""
    rows = conn.execute(
        "SELECT ts, allocations FROM setpoints WHERE asset = ? AND ts < ? AND ts >= "
        "COALESCE((SELECT MAX(ts) FROM setpoints WHERE asset = ? AND ts <= ?), ?) "
        "ORDER BY ts, rowid",
        (asset, end, asset, start, start),
    )
    return [(ts, json.loads(alloc) if alloc else {}) for ts, alloc in rows]


def _telemetry_rows(
    conn: sqlite3.Connection, asset: str, start: float, end: float
) -> list[tuple[float, float]]:
    """Telemetry in [start, end) plus the samples just outside, to interpolate to the edges."""
    return [
        (ts, p)
        for ts, p in conn.execute(
            "SELECT ts, p_kw FROM telemetry WHERE asset = ? AND p_kw IS NOT NULL AND ts >= "
            "COALESCE((SELECT MAX(ts) FROM telemetry WHERE asset = ? AND ts <= ?), ?) AND ts <= "
            "COALESCE((SELECT MIN(ts) FROM telemetry WHERE asset = ? AND ts >= ?), ?) "
            "ORDER BY ts",
            (asset, asset, start, start, asset, end, end),
        )
    ]


def _line(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    baselines: Baselines,
    reported: dict[str, dict[str, Any]],
    max_gap_s: float,
    delay_max_s: float,
) -> Line:
    shares = tuple((a, float(s)) for a, s in json.loads(row["shares"]))
    # Logs from before backups existed have no such column. (`in row` would search the
    # values of an sqlite3.Row, not its column names.)
    columns = row.keys()
    backups = json.loads(row["backups"] or "[]") if "backups" in columns else []
    assets = reported_assets([a for a, _ in shares], backups, json.loads(row["by_asset"]))
    start, end = row["window_start"], row["window_end"]
    traces: dict[str, AssetTrace] = {}
    base_kw: dict[str, float] = {}
    assumed: list[str] = []
    for asset in assets:
        kw = baselines.for_commitment(row["id"], asset, start)
        if kw is None:
            assumed.append(asset)
            kw = 0.0
        base_kw[asset] = kw
        measured = [(ts, p - kw) for ts, p in _telemetry_rows(conn, asset, start, end)]
        traces[asset] = AssetTrace(
            _allocation_rows(conn, asset, start, end), measured, backup=asset in backups
        )
    score = score_commitment(row["id"], (start, end), traces, max_gap_s, delay_max_s=delay_max_s)
    report = reported.get(row["id"])
    if report is not None:
        status, cover = report["status"], float(report["coverage"])
        delivered, settlement = float(report["delivered_kwh"]), float(report["settlement"])
    else:
        commitment = Commitment(
            row["id"],
            row["ref"],
            RefType(row["ref_type"]),
            start,
            end,
            row["requested_kwh"],
            row["accepted_kwh"],
            shares,
        )
        progress = Progress(
            row["delivered_kwh"], json.loads(row["by_asset"]), json.loads(row["covered_s_by_asset"])
        )
        status, cover = "open", coverage(commitment, progress)
        delivered, settlement = row["delivered_kwh"], None
    return Line(
        row["id"],
        row["ref"],
        row["ref_type"],
        start,
        end,
        row["requested_kwh"],
        row["accepted_kwh"],
        delivered,
        status,
        cover,
        settlement,
        base_kw,
        tuple(assumed),
        score,
    )


def build_scorecard(
    conn: sqlite3.Connection, db: Path, delay_max_s: float = DELAY_MAX_S
) -> Scorecard:
    conn.row_factory = sqlite3.Row
    period = control_period(conn)
    # The same rule as metering: an interval longer than STALE_PERIODS periods is a gap.
    max_gap_s = STALE_PERIODS * period
    baselines = Baselines(conn)
    reported = {
        cid: json.loads(payload)
        for cid, payload in conn.execute("SELECT commitment_id, payload FROM reports")
    }
    rows = conn.execute("SELECT * FROM commitments ORDER BY window_start, id").fetchall()
    lines = [_line(conn, row, baselines, reported, max_gap_s, delay_max_s) for row in rows]
    return Scorecard(str(db), period, max_gap_s, delay_max_s, lines)


# -- output ---------------------------------------------------------------------------------
def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def totals(card: Scorecard) -> dict[str, Any]:
    settled: dict[str, float] = {}
    for line in card.lines:
        if line.settlement is not None:
            settled[line.ref_type] = settled.get(line.ref_type, 0.0) + line.settlement
    scores = [line.score.total for line in card.lines if line.score.total is not None]
    return {
        "commitments": len(card.lines),
        "by_status": dict(Counter(line.status for line in card.lines)),
        "requested_kwh": round(sum(line.requested_kwh for line in card.lines), 6),
        "accepted_kwh": round(sum(line.accepted_kwh for line in card.lines), 6),
        "delivered_kwh": round(sum(line.delivered_kwh for line in card.lines), 6),
        "settlement_by_type": {t: round(v, 6) for t, v in sorted(settled.items())},
        "mean_score": round(statistics.fmean(scores), 4) if scores else None,
        "scored": len(scores),
    }


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def as_json(card: Scorecard) -> dict[str, Any]:
    return {
        "db": card.db,
        "control_period_s": round(card.control_period_s, 3),
        "max_gap_s": round(card.max_gap_s, 3),
        "delay_max_s": card.delay_max_s,
        "tolerance": TOLERANCE,
        "commitments": [
            {
                "id": line.id,
                "ref": line.ref,
                "ref_type": line.ref_type,
                "window_start": iso(line.window_start),
                "window_end": iso(line.window_end),
                "requested_kwh": line.requested_kwh,
                "accepted_kwh": line.accepted_kwh,
                "delivered_kwh": line.delivered_kwh,
                "status": line.status,
                "coverage": _r(line.coverage),
                "settlement": line.settlement,
                "baselines_kw": line.baselines_kw,
                "baseline_assumed": list(line.baseline_assumed),
                "samples": line.score.samples,
                "scored_samples": line.score.scored,
                "tracking": _r(line.score.tracking),
                "performance": {
                    "score": _r(line.score.total),
                    "correlation": _r(line.score.correlation),
                    "delay": _r(line.score.delay),
                    "delay_s": line.score.delay_s,
                    "precision": _r(line.score.precision),
                },
            }
            for line in card.lines
        ],
        "totals": totals(card),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_text(card: Scorecard) -> str:
    width = max([len("commitment"), *(len(line.id) for line in card.lines)])
    out = [
        f"flexedge report: {card.db}",
        f"control period {card.control_period_s:.3g} s; telemetry gaps over "
        f"{card.max_gap_s:.3g} s are not scored",
        "",
    ]
    out.append(
        f"{'commitment':<{width}}  {'type':<17}  {'window start (UTC)':<23} "
        f"{'length':>7} {'requested':>10} {'accepted':>9} {'delivered':>9}  "
        f"{'status':<9} {'cover':>6} {'track':>6}  {'score':>5} {'corr':>5} "
        f"{'delay':>5} {'prec':>5}"
    )
    for line in card.lines:
        s = line.score
        start = iso(line.window_start).replace("T", " ")[:23]
        out.append(
            f"{line.id:<{width}}  {line.ref_type:<17}  {start:<23} "
            f"{line.window_end - line.window_start:>6.1f}s {line.requested_kwh:>+10.4f} "
            f"{line.accepted_kwh:>+9.4f} {line.delivered_kwh:>+9.4f}  {line.status:<9} "
            f"{_pct(line.coverage):>6} {_pct(s.tracking):>6}  {_num(s.total):>5} "
            f"{_num(s.correlation):>5} {_num(s.delay):>5} {_num(s.precision):>5}"
        )
        if line.baseline_assumed:
            out.append(
                f"{'':<{width}}  (no delivery report gives a baseline for "
                f"{', '.join(line.baseline_assumed)}: 0 kW taken)"
            )
    t = totals(card)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(t["by_status"].items()))
    settled = (
        "; ".join(
            f"{kind} {v:g} {SETTLEMENT_UNIT.get(kind, '')}".rstrip()
            for kind, v in t["settlement_by_type"].items()
        )
        or "none yet"
    )
    mean = "n/a" if t["mean_score"] is None else f"{t['mean_score']:.3f}"
    out += [
        "",
        f"totals: {t['commitments']} commitments ({by_status or 'none'})",
        f"  energy: requested {t['requested_kwh']:+.4f} kWh, accepted "
        f"{t['accepted_kwh']:+.4f} kWh, delivered {t['delivered_kwh']:+.4f} kWh",
        f"  settlement: {settled}",
        f"  mean performance score: {mean} over {t['scored']} scored",
        "",
        f"track  share of 1-s samples within {TOLERANCE:.0%} of the target (never tighter "
        f"than {TOLERANCE:.0%} of the mean |target|)",
        "score  PJM-style: the mean of corr, delay and prec (of those that apply)",
        f"corr   best correlation of target and response over delays 0-"
        f"{card.delay_max_s:g} s; n/a for a flat target",
        f"delay  ({card.delay_max_s:g} s - that best delay) / {card.delay_max_s:g} s",
        "prec   1 - mean |response - target| / mean |target|",
    ]
    return "\n".join(out)


# -- plot -----------------------------------------------------------------------------------
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
        rows = _allocation_rows(conn, asset, lo, hi)
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
        for ts, p_kw in _telemetry_rows(conn, asset, lo, hi):
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


def run_report(
    db: Path, plot: Path | None = None, json_out: bool = False, delay_max_s: float = DELAY_MAX_S
) -> int:
    if plot is not None:
        require_matplotlib()
    with open_log(db) as conn:
        card = build_scorecard(conn, db, delay_max_s)
        print(json.dumps(as_json(card), indent=2) if json_out else render_text(card))
        if plot is not None:
            plot_log(conn, card, plot)
            print(f"plot: {plot}", file=sys.stderr)  # stderr: --json keeps stdout pure JSON
    return 0
