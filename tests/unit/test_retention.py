"""A bounded log: old raw telemetry becomes per-minute averages, what retention lets go is
removed oldest first, never an open commitment or an unsent message; and over accelerated
months (here: hours of a site whose retention is minutes) the file stops growing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flexedge.config.loader import Site, load_site
from flexedge.config.retention import DAY_S, RetentionSettings
from flexedge.controller.daemon.daemon import Daemon
from flexedge.controller.daemon.retention import prune_step
from flexedge.controller.daemon.store import Store
from flexedge.errors import ConfigProblems
from flexedge.tools.bench_disk import measure
from flexedge.tools.scorecard import build_scorecard, open_log
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import Clock, balancing_control, control_event, fake_site


def prune_all(store: Store, retention: RetentionSettings, now: float) -> None:
    while prune_step(store, retention, now):
        pass


def test_old_telemetry_becomes_minutes_and_only_what_retention_lets_go_is_removed(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "log.sqlite")
    retention = RetentionSettings(telemetry_raw_days=60 / DAY_S, telemetry_minutes_days=1)
    start = T0 - T0 % 60
    try:
        with store.transaction():
            store.log_telemetry(
                [
                    {
                        "ts": start + s,
                        "asset": "b1",
                        "p_kw": float(s % 3),
                        "soc": 0.5,
                        "available": int(s != 7),
                        "setpoint_kw": None,
                    }
                    for s in range(180)  # three minutes, 0 1 2 0 1 2 ... kW
                ]
            )
            store.enqueue(msg_id="old-sent", topic="t", payload=b"{}", qos=1, retain=False, ts=0)
            store.enqueue(msg_id="old-unsent", topic="t", payload=b"{}", qos=1, retain=False, ts=0)
            store.save_commitment(control_event(0.01, 0, 10), None, created_ts=0)
        store.mark_sent([1], ts=1.0)
        prune_all(store, retention, now=start + 150)  # raw kept from start + 60 (one minute)
        minutes = store.db.execute(
            "SELECT asset, minute_ts, p_kw_mean, p_kw_min, p_kw_max, soc_mean, "
            "available_share, samples FROM telemetry_minutes"
        ).fetchall()
        raw_from = store.db.execute("SELECT MIN(ts), COUNT(*) FROM telemetry").fetchone()
        outbox = store.db.execute("SELECT id FROM outbox").fetchall()
        commitments = store.db.execute("SELECT COUNT(*) FROM commitments").fetchone()[0]
    finally:
        store.close()
    assert minutes == [("b1", start, pytest.approx(1.0), 0.0, 2.0, 0.5, 59 / 60, 60)]
    assert raw_from == (start + 60, 120)
    assert outbox == [("old-unsent",)]  # a sent row ages out; an unsent one never does
    assert commitments == 1  # open: kept however old


def soak_site(tmp_path: Path) -> Site:
    """fake_site with a retention of minutes: raw telemetry 5 min, minutes 20, messages 10,
    records 20."""
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["retention"] = {
        "telemetry_raw_days": 300 / DAY_S,
        "telemetry_minutes_days": 1200 / DAY_S,
        "messages_days": 600 / DAY_S,
        "records_days": 1200 / DAY_S,
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_site(path)


# About 10 s: 5,400 ticks, 180 control events and 90 retention runs of simulated time.
@pytest.mark.timeout(120)
def test_the_log_levels_off_over_accelerated_months(tmp_path: Path) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    daemon = Daemon(soak_site(tmp_path), clock, devices={"b1": battery})
    pages: list[int] = []
    hours = 1.5

    async def soak() -> None:
        daemon.log_start()
        for second in range(int(hours * 3600)):
            clock.now = T0 + second
            if second % 30 == 5:  # a control event in every 30-s slot
                message = balancing_control(f"bce-{second}", clock.now - 5, 0.002)
                await daemon.market.handle(message, "market/balancing-control")
            await daemon.control.tick()
            daemon.market.standing.refresh_orders()
            if second % 60 == 0:
                await daemon.prune_log()
                # Every message "sent": the broker's PUBACK is what ages an outbox row.
                unsent = daemon.store.unsent(limit=100_000)
                daemon.store.mark_sent([row.seq for row in unsent], clock.now)
            if second % 600 == 599:
                pages.append(daemon.store.db.execute("PRAGMA page_count").fetchone()[0])

    try:
        run(soak())
        counts = {
            table: daemon.store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("telemetry", "telemetry_minutes", "inbound", "reports", "outbox")
        }
    finally:
        daemon.store.close()
    # Retention is full after 20 minutes (the longest of it); from then on the file holds.
    settled = pages[3:]
    assert max(settled) <= min(settled) * 1.05, pages
    assert pages[-1] < pages[0] * 2, pages
    # 5 min of raw telemetry at 1 Hz, 20 one-minute rows; 10 min of messages (20 events).
    assert 300 <= counts["telemetry"] <= 300 + 60 + 5, counts
    assert 15 <= counts["telemetry_minutes"] <= 21, counts
    assert 19 <= counts["inbound"] <= 22, counts
    assert 38 <= counts["reports"] <= 42, counts
    # `flexedge report` reads the pruned log: every report still there has its line.
    with open_log(daemon.store.path) as conn:
        card = build_scorecard(conn, daemon.store.path)
    assert len(card.lines) == counts["reports"]
    assert card.control_period_s == 1.0
    assert all(json.dumps(line.status) for line in card.lines)


def test_a_retention_that_keeps_minutes_shorter_than_raw_rows_is_a_config_error(
    tmp_path: Path,
) -> None:
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for retention, expected in (
        (
            {"records_days": 0, "messages_days": -1},
            ["retention.records_days", "retention.messages_days"],
        ),
        ({"telemetry_raw_days": 30, "telemetry_minutes_days": 7}, ["telemetry_minutes_days must"]),
    ):
        raw["retention"] = retention
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        with pytest.raises(ConfigProblems) as caught:
            load_site(path)
        said = " | ".join(f"{p.field}: {p.problem}" for p in caught.value.problems)
        assert all(e in said for e in expected), said


def test_the_disk_bench_measures_the_log_against_a_bare_table() -> None:
    figures = measure(devices=2, hours=1)  # enough rows that whole pages tell the sizes
    raw, floor = figures["raw_bytes_per_device_day"], figures["floor_bytes_per_device_day"]
    assert 0 < floor < raw  # the log's indexes cost something over the bare rows
    assert 0 < figures["minute_bytes_per_device_day"] < raw / 20  # a row a minute, not a second
