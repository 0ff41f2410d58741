"""Reading a daemon's SQLite log for the report: read-only, checked to be a flexedge log, and
the rows a score needs (setpoints, telemetry, the baselines the delivery reports state)."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    """The control period the daemon last started with, as it logs it; for a log from an
    older flexedge, the median spacing of recent control ticks."""
    with contextlib.suppress(sqlite3.Error, ValueError, KeyError, TypeError):
        row = conn.execute(
            "SELECT detail FROM events WHERE kind = 'started' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            return float(json.loads(row[0])["control_period_s"])
    for sql in (
        "SELECT DISTINCT ts FROM setpoints WHERE cause = 'tick' ORDER BY ts DESC LIMIT 1001",
        "SELECT DISTINCT ts FROM telemetry ORDER BY ts DESC LIMIT 1001",
    ):
        stamps = [row[0] for row in conn.execute(sql)]
        gaps = [a - b for a, b in itertools.pairwise(stamps) if a > b]
        if gaps:
            return float(statistics.median(gaps))
    return 1.0


def allocation_rows(
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


def telemetry_rows(
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
