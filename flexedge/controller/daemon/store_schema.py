"""The tables of the local SQLite log, and bringing a log from an older flexedge up to them.

An older log keeps its rows: a table it lacks is created, a column it lacks is added.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

SCHEMA: dict[str, tuple[dict[str, Any], str | tuple[str, ...] | None]] = {
    "inbound": (
        {
            "seq": int,
            "msg_id": str,
            "topic": str,
            "type": str,
            "received_ts": float,
            "payload": str,
            "status": str,
            "reason": str,
            "commitment_id": str,
            # The id of the ack that answered it: derived from topic and payload, so every
            # delivery of one message shares it.
            "ack_id": str,
        },
        "seq",
    ),
    "offers": (
        {
            "id": str,
            "asset": str,
            "slot_start": float,
            "slot_end": float,
            "energy_kwh": float,
            "rate_ct_per_kwh": float,
            "price_ct": float,
            "created_ts": float,
        },
        "id",
    ),
    "commitments": (
        {
            "id": str,
            "ref": str,
            "ref_type": str,
            "offer_id": str,
            "window_start": float,
            "window_end": float,
            "requested_kwh": float,
            "accepted_kwh": float,
            "shares": str,
            "settlement": float,
            "created_ts": float,
            "delivered_kwh": float,
            "by_asset": str,
            "covered_s_by_asset": str,
            "state": str,
            "backups": str,
            # The residual id the trade announced for the rest of offer_id (gsy-e).
            "residual_offer_id": str,
        },
        "id",
    ),
    "setpoints": (
        {"ts": float, "asset": str, "p_kw": float, "allocations": str, "cause": str},
        None,
    ),
    "telemetry": (
        {
            "ts": float,
            "asset": str,
            "p_kw": float,
            "soc": float,
            "available": int,
            "setpoint_kw": float,
        },
        None,
    ),
    # Telemetry older than the raw retention, as one row per asset and minute.
    "telemetry_minutes": (
        {
            "asset": str,
            "minute_ts": float,
            "p_kw_mean": float,
            "p_kw_min": float,
            "p_kw_max": float,
            "soc_mean": float,
            "available_share": float,
            "samples": int,
        },
        ("asset", "minute_ts"),
    ),
    "reports": (
        {
            "id": str,
            "commitment_id": str,
            "status": str,
            "delivered_kwh": float,
            "accepted_kwh": float,
            "payload": str,
            "created_ts": float,
        },
        "id",
    ),
    "orders": (
        {
            "seq": int,
            "tariff_id": str,
            "exercise_ratio": float,
            "price_per_kwh": float,
            "msg_id": str,
            "created_ts": float,
        },
        "seq",
    ),
    "outbox": (
        {
            "seq": int,
            "id": str,
            "topic": str,
            "payload": str,
            "qos": int,
            "retain": int,
            "created_ts": float,
            "sent_ts": float,
        },
        "seq",
    ),
    "events": ({"seq": int, "ts": float, "kind": str, "detail": str}, "seq"),
    # What the operator set that outlives a restart: the mode, each hold, the orders.
    "operator": ({"key": str, "value": str, "ts": float}, "key"),
    "measurements": (
        {
            "id": str,
            "asset": str,
            "slot_start": str,
            "energy_kwh": float,
            "coverage": float,
            "created_ts": float,
        },
        "id",
    ),
}
INDEXES = [
    ("inbound", ["msg_id"]),
    ("telemetry", ["asset", "ts"]),
    ("setpoints", ["asset", "ts"]),
    ("outbox", ["sent_ts"]),
    ("outbox", ["id"]),  # the ack a message delivered again already had
    ("commitments", ["state"]),
    # `flexedge report`: each commitment's report, commitments in window order.
    ("reports", ["commitment_id"]),
    ("commitments", ["window_start"]),
    # Retention removes the oldest rows first (retention.py).
    ("telemetry_minutes", ["minute_ts"]),
    ("inbound", ["received_ts"]),
    ("setpoints", ["ts"]),
    ("events", ["ts"]),
]


def create_or_upgrade(db: sqlite_utils.Database) -> None:
    """Create what the log lacks of SCHEMA and INDEXES; existing tables and rows stay."""
    for name, (columns, pk) in SCHEMA.items():
        db.create_table(name, columns, pk=pk, if_not_exists=True)
        # A log from an older flexedge lacks the newer columns: add them, keep its rows.
        missing = set(columns) - set(db.table(name).columns_dict)
        for column in sorted(missing):
            db.table(name).add_column(column, columns[column])
    for table, cols in INDEXES:
        db.table(table).create_index(cols, if_not_exists=True)
