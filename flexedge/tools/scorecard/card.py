"""The scorecard: one line per commitment in the log, scored by controller/core/scoring.py."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexedge.controller.core.health import STALE_PERIODS
from flexedge.controller.core.model import Commitment, Progress, RefType
from flexedge.controller.core.reports import coverage, reported_assets
from flexedge.controller.core.scoring import DELAY_MAX_S, AssetTrace, Score, score_commitment
from flexedge.tools.scorecard.log_reader import (
    Baselines,
    allocation_rows,
    control_period,
    telemetry_rows,
)


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
    status: str  # the report's status, or "open" before it is reported ("dropped": never)
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
        measured = [(ts, p - kw) for ts, p in telemetry_rows(conn, asset, start, end)]
        traces[asset] = AssetTrace(
            allocation_rows(conn, asset, start, end), measured, backup=asset in backups
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
        # Not reported: open, or dropped at a restart (a window beyond the horizon).
        status = "dropped" if row["state"] == "dropped" else "open"
        cover = coverage(commitment, progress)
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
