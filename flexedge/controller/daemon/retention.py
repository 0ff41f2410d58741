"""A bounded log: what the site file's `retention` section lets go, removed oldest first.

Raw telemetry older than its retention becomes one row per asset and minute
(telemetry_minutes: mean, min and max power, mean state of charge, the share of samples the
device was available, how many samples) before it is deleted; the minutes go after their own
retention. Acknowledged messages, then the records, go after theirs. An open commitment and an
outbox row the broker has not confirmed are never removed.

Each step is one short transaction of a bounded number of rows, so the daemon runs them on its
loop between ticks (a job a minute, a few steps at a time) without holding up control; a log
that has fallen behind (a site back after months off) catches up over a few minutes.
SQLite reuses the pages freed, so the file stops growing once the deletions keep pace.
"""

from __future__ import annotations

from flexedge.config.retention import DAY_S, RetentionSettings
from flexedge.controller.daemon.store import Store

BATCH_ROWS = 5000  # at most this many rows of one table per step
ROLLUP_S = 120.0  # at most this much raw telemetry per asset turned into minutes per step

_ROLL_UP = """
INSERT INTO telemetry_minutes
    (asset, minute_ts, p_kw_mean, p_kw_min, p_kw_max, soc_mean, available_share, samples)
SELECT asset, CAST(ts / 60 AS INTEGER) * 60.0 AS minute, AVG(p_kw), MIN(p_kw), MAX(p_kw),
       AVG(soc), AVG(available), COUNT(*)
FROM telemetry WHERE asset = ? AND ts < ? GROUP BY minute
ON CONFLICT (asset, minute_ts) DO UPDATE SET
    p_kw_mean = (p_kw_mean * samples + excluded.p_kw_mean * excluded.samples)
        / (samples + excluded.samples),
    p_kw_min = MIN(p_kw_min, excluded.p_kw_min),
    p_kw_max = MAX(p_kw_max, excluded.p_kw_max),
    soc_mean = (soc_mean * samples + excluded.soc_mean * excluded.samples)
        / (samples + excluded.samples),
    available_share = (available_share * samples + excluded.available_share * excluded.samples)
        / (samples + excluded.samples),
    samples = samples + excluded.samples
"""


def _expiring(retention: RetentionSettings, now: float) -> list[tuple[str, str, float]]:
    """(table, the condition on its old rows, the cutoff the condition compares with)."""
    messages = now - retention.messages_days * DAY_S
    records = now - retention.records_days * DAY_S
    return [
        ("telemetry_minutes", "minute_ts < ?", now - retention.telemetry_minutes_days * DAY_S),
        ("outbox", "sent_ts IS NOT NULL AND sent_ts < ?", messages),  # never an unsent row
        ("inbound", "received_ts < ?", messages),
        ("setpoints", "ts < ?", records),
        ("events", "ts < ? AND kind != 'started'", records),  # report reads the last start
        ("reports", "created_ts < ?", records),
        ("commitments", "state != 'open' AND created_ts < ?", records),  # never an open one
        ("measurements", "created_ts < ?", records),
        ("offers", "created_ts < ?", records),
        ("orders", "created_ts < ?", records),
    ]


def _assets(store: Store) -> list[str]:
    """The assets in the raw telemetry, one index seek each: the (asset, ts) index serves
    every query here, so the table needs no index of its own on ts (a fifth of its size)."""
    found: list[str] = []
    while True:
        row = store.db.execute(
            "SELECT asset FROM telemetry WHERE asset > ? ORDER BY asset LIMIT 1",
            [found[-1] if found else ""],
        ).fetchone()
        if row is None:
            return found
        found.append(row[0])


def _roll_up(store: Store, cutoff: float) -> int:
    """Turn each asset's oldest raw telemetry before `cutoff` (at most ROLLUP_S of it) into
    minutes."""
    cutoff -= cutoff % 60  # whole minutes only: a minute is averaged from all its samples
    removed = 0
    for asset in _assets(store):
        oldest = store.db.execute(
            "SELECT MIN(ts) FROM telemetry WHERE asset = ?", [asset]
        ).fetchone()[0]
        if oldest is None or oldest >= cutoff:
            continue
        upper = min(cutoff, oldest - oldest % 60 + ROLLUP_S)
        store.db.execute(_ROLL_UP, [asset, upper])
        removed += store.db.execute(
            "DELETE FROM telemetry WHERE asset = ? AND ts < ?", [asset, upper]
        ).rowcount
    return removed


def prune_step(store: Store, retention: RetentionSettings, now: float) -> int:
    """One bounded step of retention in one transaction; returns how many rows it removed
    (0: the log holds nothing retention lets go). Raises StoreError, changing nothing."""
    with store.transaction():
        removed = _roll_up(store, now - retention.telemetry_raw_days * DAY_S)
        for table, condition, cutoff in _expiring(retention, now):
            removed += store.db.execute(
                f"DELETE FROM {table} WHERE rowid IN "
                f"(SELECT rowid FROM {table} WHERE {condition} LIMIT {BATCH_ROWS})",
                [cutoff],
            ).rowcount
    return removed
