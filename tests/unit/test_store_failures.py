"""A log that cannot be written: nothing is decided, closed or changed on the strength of a
write that failed, the store says why, and everything goes through once it can write again.

The failures are SQLite's own. A full disk: PRAGMA max_page_count lets the database grow no
page more, so a write that needs one fails (a small row may still fit a page already there,
as on a real full disk). A log that takes no write at all: PRAGMA query_only, as when the
kernel remounts a failing flash card read-only.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flexedge.controller.daemon.daemon import Daemon
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.store import Store
from flexedge.errors import StoreError
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import (
    Clock,
    balancing_control,
    control_event,
    fake_site,
    queued,
    shell,
)


def fill_disk(store: Store) -> None:
    """No page more for the database, and every free page taken: it is full."""
    store.db.execute("CREATE TABLE IF NOT EXISTS ballast (junk BLOB)")
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        for _ in range(10_000):
            store.db.execute("INSERT INTO ballast VALUES (zeroblob(512))")


def free_disk(store: Store) -> None:
    store.db.execute("PRAGMA max_page_count = 1073741823")


def remount_read_only(store: Store) -> None:
    store.db.execute("PRAGMA query_only = ON")


def remount_read_write(store: Store) -> None:
    store.db.execute("PRAGMA query_only = OFF")


def test_a_failed_write_rolls_back_says_why_and_the_next_commit_clears_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "log.sqlite")
    try:
        fill_disk(store)
        with (
            pytest.raises(StoreError, match=r"cannot write the SQLite log .*full"),
            store.transaction(),
        ):
            store.log_event(T0, "first", "fits in a page already there, perhaps")
            store.log_event(T0, "big", "x" * 100_000)  # needs pages: fails
        assert store.problem is not None and "full" in store.problem
        assert store.failures == 1
        assert store.db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        free_disk(store)
        with store.transaction():
            store.log_event(T0, "big", "x" * 100_000)
        assert store.problem is None
        assert store.db.execute("SELECT kind FROM events").fetchall() == [("big",)]
    finally:
        store.close()


def test_a_window_that_closes_on_a_read_only_log_is_reported_once_it_takes_writes(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    kwh = 0.01  # 3.6 kW for 10 s
    with shell(tmp_path, clock, battery) as (control, store):

        async def scenario() -> tuple[int, int]:
            await control.tick()
            control.add(control_event(kwh, T0 + 1, T0 + 11))
            for second in range(1, 6):
                clock.now = T0 + second
                await control.tick()
            remount_read_only(store)
            for second in range(6, 40):  # the window and the slot end meanwhile
                clock.now = T0 + second
                await control.tick()
            still_open = len(control.commitments_in_progress())
            unsent_while_full = len(store.unsent())
            remount_read_write(store)
            clock.now = T0 + 40
            await control.tick()
            clock.now = T0 + 41
            await control.tick()
            return still_open, unsent_while_full

        still_open, unsent_while_full = run(scenario())
        deliveries = queued(store, "market/delivery")
        measurements = queued(store, "market/measurement")
        telemetry_rows = store.db.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0]
        assert control.commitments_in_progress() == []
    # Metering and control went on: the battery did its 10 s although nothing was logged.
    written = [p for p in battery.writes if p is not None]
    assert max(written) == pytest.approx(3.6)
    assert battery.writes[-1] == 0.0
    assert still_open == 1 and unsent_while_full == 0  # kept in memory, not lost, not sent
    [report] = deliveries  # once, when the log took it
    assert report["status"] == "delivered"
    assert report["delivered_kwh"] == pytest.approx(kwh, rel=0.02)
    [slot] = measurements
    assert slot["energy_kwh"] == pytest.approx(kwh, rel=0.02) and slot["coverage"] == 1.0
    # The readings of the read-only spell were kept and logged after it (one per tick).
    assert telemetry_rows >= 40


def test_a_market_message_the_log_cannot_take_changes_nothing_and_is_decided_later(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)
        message = balancing_control("bce-1", T0, 0.01)

        async def scenario() -> None:
            await control.tick()
            desk.standing.refresh_orders()
            remount_read_only(store)
            with pytest.raises(StoreError, match="readonly"):
                await desk.handle(message, "market/balancing-control")
            assert control.commitments_in_progress() == []
            assert battery.writes[-1] != pytest.approx(0.01 / (25 / 3600))
            remount_read_write(store)
            await desk.handle(message, "market/balancing-control")  # the daemon retries it
            await control.dispatched()

        run(scenario())
        [ack] = queued(store, "market/ack")
        inbound = store.db.execute("SELECT status FROM inbound").fetchall()
        [(commitment, _)] = control.commitments_in_progress()
    assert ack["status"] == "accepted" and ack["commitment_id"] == commitment.id
    assert inbound == [("accepted",)]


def test_an_order_change_the_log_cannot_take_is_refused_and_the_order_stays(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    daemon = Daemon(fake_site(tmp_path), clock, devices={"b1": battery})
    try:
        run(daemon.control.tick())
        daemon.market.standing.refresh_orders()
        remount_read_only(daemon.store)
        refused = daemon.commands.set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": 1.2}')
        status = daemon.commands.status()
        policy = daemon.market.standing.policy("tariff-1", "up")
        in_force = daemon.market.standing.order_in_force("tariff-1", "up")
        remount_read_write(daemon.store)
        taken = daemon.commands.set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": 1.2}')
        orders = queued(daemon.store, "market/balancing-order/tariff-1/up")
    finally:
        daemon.store.close()
    assert not refused["ok"] and "the order is unchanged" in refused["error"]
    assert "readonly" in refused["error"]
    assert policy is not None and policy.exercise_ratio == 1.5
    assert in_force is not None and in_force.exercise_ratio == 1.5
    # Still answered while the log cannot be written, and says why.
    assert status["ok"] and status["problems"] and "readonly" in status["problems"][0]
    assert taken["ok"] and taken["published_ratio"] == 1.2
    assert [o["exercise_ratio"] for o in orders] == [1.5, 1.2]
