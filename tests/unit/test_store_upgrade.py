"""A log written by an older flexedge opens in this one: new columns are added, rows kept."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from flexedge.controller.core.model import Commitment, RefType
from flexedge.controller.daemon.store import Store
from flexedge.controller.daemon.store_schema import SCHEMA


def test_log_without_the_backups_column_gets_it_and_keeps_its_commitments(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_columns = {c: t for c, t in SCHEMA["commitments"][0].items() if c != "backups"}
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE commitments ({', '.join(old_columns)}, PRIMARY KEY (id))")
    conn.execute(
        "INSERT INTO commitments (id, ref, ref_type, offer_id, window_start, window_end, "
        "requested_kwh, accepted_kwh, shares, settlement, created_ts, delivered_kwh, by_asset, "
        "covered_s_by_asset, state) VALUES ('cm-1', 't1', 'balancing_trade', 'o1', 10, 20, "
        "0.5, 0.4, ?, 1.2, 9, 0.1, ?, ?, 'open')",
        (json.dumps([["b1", 1.0]]), json.dumps({"b1": 0.1}), json.dumps({"b1": 3.0})),
    )
    conn.commit()
    conn.close()

    store = Store(path)
    try:
        [(commitment, progress, offer_id)] = store.open_commitments()
        assert commitment == Commitment(
            "cm-1",
            "t1",
            RefType.BALANCING_TRADE,
            10,
            20,
            0.5,
            0.4,
            (("b1", 1.0),),
            settlement=1.2,
            backups=(),
        )
        assert progress.by_asset == {"b1": 0.1}
        assert offer_id == "o1"
        # New commitments carry their backups from now on.
        store.save_commitment(
            Commitment(
                "cm-2",
                "t2",
                RefType.BALANCING_TRADE,
                10,
                20,
                0.1,
                0.1,
                (("b1", 1.0),),
                backups=("b2", "b3"),
            ),
            "o2",
            11,
        )
        assert [c.backups for c, _, _ in store.open_commitments()] == [(), ("b2", "b3")]
    finally:
        store.close()


def test_log_without_the_residual_column_gets_it_and_keeps_the_aliases_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old_columns = {
        c: t for c, t in SCHEMA["commitments"][0].items() if c not in ("residual_offer_id",)
    }
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE commitments ({', '.join(old_columns)}, PRIMARY KEY (id))")
    conn.execute(
        "INSERT INTO commitments (id, ref, ref_type, offer_id, window_start, window_end, "
        "requested_kwh, accepted_kwh, shares, settlement, created_ts, delivered_kwh, by_asset, "
        "covered_s_by_asset, state, backups) VALUES ('cm-1', 't1', 'balancing_trade', 'o1', "
        "10, 20, 0.5, 0.4, '[[\"b1\", 1.0]]', 1.2, 9, 0.1, '{}', '{}', 'open', '[]')"
    )
    conn.commit()
    conn.close()

    store = Store(path)
    try:
        assert "residual_offer_id" in store.db.table("commitments").columns_dict
        assert store.residual_offer_ids() == {}
        assert store.traded_kwh_by_offer() == {"o1": 0.5}
        store.save_commitment(
            Commitment("cm-2", "t2", RefType.BALANCING_TRADE, 10, 20, 0.1, 0.1, (("b1", 1.0),)),
            "o1",
            11,
            "o1-rest",
        )
    finally:
        store.close()
    reopened = Store(path)
    try:
        assert reopened.residual_offer_ids() == {"o1-rest": "o1"}
        assert reopened.traded_kwh_by_offer() == {"o1": 0.6}
    finally:
        reopened.close()
