"""The local SQLite log (sqlite-utils, WAL): everything in, everything decided, everything out.

WAL with synchronous=NORMAL: a commit survives a killed process (kill -9) and a clean reboot;
only a power cut can lose the last commits, and never corrupts the file. Callers group the
writes that belong together in `with store.transaction():` so a decision and its ack land
together or not at all.

Every sqlite3 error leaves here as a StoreError (the transaction rolled back), and `problem`
says what failed until a transaction commits again: the daemon shows it as its degraded state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from flexedge.controller.core.model import Commitment, Offer, Progress, RefType
from flexedge.controller.daemon.store_schema import create_or_upgrade
from flexedge.errors import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The daemon is one asyncio thread; check_same_thread stays on to catch mistakes.
        self._conn = sqlite3.connect(str(path), isolation_level=None)
        self.db = sqlite_utils.Database(self._conn)
        self.db.enable_wal()
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        # No checkpoints on the control path: their fsyncs stall the loop for tens of ms.
        # checkpoint() runs them from a worker thread on its own connection instead.
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        create_or_upgrade(self.db)
        self._depth = 0
        # What the last failed read or write said, until a transaction commits again.
        self.problem: str | None = None
        self.failures = 0  # failed reads and writes since start, for the metrics

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            self.failures += 1
            problem = f"cannot {what} the SQLite log {self.path}: {exc}"
            if self.problem is None:  # logged when it starts, not on every failed write
                log.error("%s; the site is degraded until it can", problem)
            self.problem = problem
            raise StoreError(problem) from exc

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Plain executemany: sqlite-utils' insert re-reads the table schema on every call,
        which costs more than the insert itself on the control path."""
        if not rows:
            return
        columns = list(rows[0])
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        )
        self._conn.executemany(sql, [tuple(row[c] for c in columns) for row in rows])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside land together or not at all (nesting joins the outer one).
        A failed write inside, or a failed commit, rolls everything back: StoreError."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._translated("write"):
            self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            with self._translated("write"):
                try:
                    yield
                    self._conn.execute("COMMIT")
                except BaseException:
                    # A full disk has already rolled SQLite back; then there is nothing to undo.
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.execute("ROLLBACK")
                    raise
        finally:
            self._depth = 0
        if self.problem is not None:
            log.warning("the SQLite log %s is written again", self.path)
            self.problem = None

    def close(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file. Safe from another thread."""
        try:
            conn = sqlite3.connect(str(self.path), timeout=5)
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            # The WAL keeps every commit meanwhile; the next checkpoint folds it back.
            log.warning("checkpoint of %s failed: %s", self.path, exc)

    # -- inbound ------------------------------------------------------------------------
    def record_inbound(
        self,
        *,
        msg_id: str | None,
        topic: str,
        msg_type: str,
        received_ts: float,
        payload: bytes,
        status: str,
        reason: str,
        commitment_id: str | None,
        ack_id: str | None,
    ) -> None:
        self._insert(
            "inbound",
            [
                {
                    "msg_id": msg_id,
                    "topic": topic,
                    "type": msg_type,
                    "received_ts": received_ts,
                    "payload": payload.decode("utf-8", errors="replace"),
                    "status": status,
                    "reason": reason,
                    "commitment_id": commitment_id,
                    "ack_id": ack_id,
                }
            ],
        )

    def earlier_acceptance(self, msg_id: str) -> tuple[str, str | None, float] | None:
        """(status, commitment id, when) if this id already changed something."""
        with self._translated("read"):
            row = self._conn.execute(
                "SELECT status, commitment_id, received_ts FROM inbound WHERE msg_id = ? "
                "AND status IN ('accepted', 'clipped') ORDER BY seq LIMIT 1",
                (msg_id,),
            ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def earlier_ack(self, ack_id: str) -> bytes | None:
        """The payload of the ack already queued under `ack_id`, if any."""
        with self._translated("read"):
            row = self._conn.execute(
                "SELECT payload FROM outbox WHERE id = ? ORDER BY seq LIMIT 1", (ack_id,)
            ).fetchone()
        return str(row[0]).encode("utf-8") if row else None

    # -- offers and commitments ---------------------------------------------------------
    def save_offers(self, offers: Iterable[Offer], created_ts: float) -> None:
        self.db.table("offers").upsert_all(
            [
                {
                    "id": o.id,
                    "asset": o.asset,
                    "slot_start": o.slot_start,
                    "slot_end": o.slot_end,
                    "energy_kwh": o.energy_kwh,
                    "rate_ct_per_kwh": o.rate_ct_per_kwh,
                    "price_ct": o.price_ct,
                    "created_ts": created_ts,
                }
                for o in offers
            ],
            pk="id",
        )

    def offers_since(self, slot_start: float) -> list[Offer]:
        rows = self._conn.execute(
            "SELECT id, asset, slot_start, slot_end, energy_kwh, rate_ct_per_kwh FROM offers "
            "WHERE slot_end > ?",
            (slot_start,),
        ).fetchall()
        return [Offer(*row) for row in rows]

    def save_commitment(
        self,
        c: Commitment,
        offer_id: str | None,
        created_ts: float,
        residual_offer_id: str | None = None,
    ) -> None:
        self._insert(
            "commitments",
            [
                {
                    "id": c.id,
                    "ref": c.ref,
                    "ref_type": c.ref_type.value,
                    "offer_id": offer_id,
                    "window_start": c.window_start,
                    "window_end": c.window_end,
                    "requested_kwh": c.requested_kwh,
                    "accepted_kwh": c.accepted_kwh,
                    "shares": json.dumps(c.shares),
                    "settlement": c.settlement,
                    "created_ts": created_ts,
                    "delivered_kwh": 0.0,
                    "by_asset": "{}",
                    "covered_s_by_asset": "{}",
                    "state": "open",
                    "backups": json.dumps(c.backups),
                    "residual_offer_id": residual_offer_id,
                }
            ],
        )

    def save_progress(self, progress: dict[str, Progress]) -> None:
        self._conn.executemany(
            "UPDATE commitments SET delivered_kwh = ?, by_asset = ?, covered_s_by_asset = ? "
            "WHERE id = ?",
            [
                (p.delivered_kwh, json.dumps(p.by_asset), json.dumps(p.covered_s_by_asset), cid)
                for cid, p in progress.items()
            ],
        )

    def open_commitments(self) -> list[tuple[Commitment, Progress, str | None]]:
        rows = self._conn.execute(
            "SELECT id, ref, ref_type, window_start, window_end, requested_kwh, accepted_kwh, "
            "shares, settlement, delivered_kwh, by_asset, covered_s_by_asset, offer_id, "
            "backups FROM commitments WHERE state = 'open' ORDER BY created_ts"
        ).fetchall()
        result = []
        for row in rows:
            commitment = Commitment(
                id=row[0],
                ref=row[1],
                ref_type=RefType(row[2]),
                window_start=row[3],
                window_end=row[4],
                requested_kwh=row[5],
                accepted_kwh=row[6],
                shares=tuple((a, float(s)) for a, s in json.loads(row[7])),
                settlement=row[8],
                backups=tuple(json.loads(row[13] or "[]")),
            )
            progress = Progress(row[9], json.loads(row[10]), json.loads(row[11]))
            result.append((commitment, progress, row[12]))
        return result

    def traded_kwh_by_offer(self) -> dict[str, float]:
        rows = self._conn.execute(
            "SELECT offer_id, SUM(ABS(requested_kwh)) FROM commitments "
            "WHERE offer_id IS NOT NULL GROUP BY offer_id"
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def residual_offer_ids(self) -> dict[str, str]:
        """Every residual id an accepted trade announced -> the offer it is the rest of."""
        rows = self._conn.execute(
            "SELECT residual_offer_id, offer_id FROM commitments "
            "WHERE residual_offer_id IS NOT NULL AND offer_id IS NOT NULL"
        ).fetchall()
        return {row[0]: row[1] for row in rows}

    def drop_commitment(self, commitment_id: str, reason: str, ts: float) -> None:
        """An open commitment that is no longer delivered or reported (inside a transaction)."""
        self._conn.execute(
            "UPDATE commitments SET state = 'dropped' WHERE id = ?", (commitment_id,)
        )
        self.log_event(ts, "commitment-dropped", f"{commitment_id}: {reason}")

    def close_commitment(self, commitment_id: str, report: dict[str, Any], ts: float) -> None:
        self.db.table("reports").upsert(
            {
                "id": report["id"],
                "commitment_id": commitment_id,
                "status": report["status"],
                "delivered_kwh": report["delivered_kwh"],
                "accepted_kwh": report["accepted_kwh"],
                "payload": json.dumps(report),
                "created_ts": ts,
            },
            pk="id",
        )
        self._conn.execute(
            "UPDATE commitments SET state = 'reported' WHERE id = ?", (commitment_id,)
        )

    # -- time series ----------------------------------------------------------------------
    def log_telemetry(self, rows: list[dict[str, Any]]) -> None:
        self._insert("telemetry", rows)

    def log_setpoints(self, rows: list[dict[str, Any]]) -> None:
        self._insert("setpoints", rows)

    def log_order(self, tariff_id: str, ratio: float, price: float, msg_id: str, ts: float) -> None:
        self.db.table("orders").insert(
            {
                "tariff_id": tariff_id,
                "exercise_ratio": ratio,
                "price_per_kwh": price,
                "msg_id": msg_id,
                "created_ts": ts,
            }
        )

    def log_measurement(self, payload: dict[str, Any], ts: float) -> None:
        self.db.table("measurements").upsert(
            {
                "id": payload["id"],
                "asset": payload["asset"],
                "slot_start": payload["slot_start"],
                "energy_kwh": payload["energy_kwh"],
                "coverage": payload["coverage"],
                "created_ts": ts,
            },
            pk="id",
        )

    def set_operator(self, key: str, value: Any, ts: float) -> None:
        """Keep one of the operator's settings (JSON) across restarts; None drops it."""
        if value is None:
            self._conn.execute("DELETE FROM operator WHERE key = ?", (key,))
            return
        self._conn.execute(
            "INSERT INTO operator (key, value, ts) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
            (key, json.dumps(value), ts),
        )

    def operator_settings(self) -> dict[str, Any]:
        rows = self._conn.execute("SELECT key, value FROM operator").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def latest_reports(self, last: int) -> list[dict[str, Any]]:
        """The payloads of the `last` delivery reports, oldest first."""
        with self._translated("read"):
            rows = self._conn.execute(
                "SELECT payload FROM (SELECT rowid, payload FROM reports "
                "ORDER BY created_ts DESC, rowid DESC LIMIT ?) ORDER BY rowid",
                (last,),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def log_event(self, ts: float, kind: str, detail: str) -> None:
        self._insert("events", [{"ts": ts, "kind": kind, "detail": detail}])

    # -- outbox ---------------------------------------------------------------------------
    def enqueue(
        self, *, msg_id: str, topic: str, payload: bytes, qos: int, retain: bool, ts: float
    ) -> int:
        cursor = self._conn.execute(
            "INSERT INTO outbox (id, topic, payload, qos, retain, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (msg_id, topic, payload.decode("utf-8"), qos, int(retain), ts),
        )
        return int(cursor.lastrowid or 0)

    def unsent(self, limit: int = 1000) -> list[OutboxRow]:
        with self._translated("read"):
            rows = self._conn.execute(
                "SELECT seq, id, topic, payload, qos, retain FROM outbox WHERE sent_ts IS NULL "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3].encode("utf-8"), r[4], bool(r[5])) for r in rows]

    def mark_sent(self, seqs: Iterable[int], ts: float) -> None:
        with self._translated("write"):
            self._conn.executemany(
                "UPDATE outbox SET sent_ts = ? WHERE seq = ?", [(ts, seq) for seq in seqs]
            )

    def unsent_count(self) -> int:
        with self._translated("read"):
            row = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE sent_ts IS NULL").fetchone()
        return int(row[0])
