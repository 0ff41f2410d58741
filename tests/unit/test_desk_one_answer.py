"""The real market desk on a real Store: one ack per inbound message whatever its bytes, and a
message the broker redelivers after a restart answered by the same ack, under the same id."""

from __future__ import annotations

from pathlib import Path

from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.mqtt import Inbound
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import BASE, Clock, balancing_control, queued, shell
from tests.unit.test_wire_hostile_bytes import HOSTILE

TOPIC = "market/balancing-control"


def test_a_message_redelivered_after_a_restart_gets_the_same_ack_and_changes_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    message = balancing_control("bce-1", T0, 0.01)
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)

        async def first_life() -> None:
            await control.tick()
            desk.standing.refresh_orders()
            await desk.handle(message, TOPIC)
            await control.dispatched()

        run(first_life())
    # The daemon died before the broker had its PUBACK: the broker delivers the message again.
    clock.now += 2
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)
        desk.restore()

        async def second_life() -> None:
            await desk.handle(message, TOPIC)
            reused = balancing_control("bce-1", T0, 0.005)  # a new message reusing the id
            await desk.handle(reused, TOPIC)
            await control.dispatched()

        run(second_life())
        acks = queued(store, "market/ack")
        inbound = store.db.execute(
            "SELECT msg_id, status, ack_id FROM inbound ORDER BY seq"
        ).fetchall()
        commitments = store.db.execute("SELECT COUNT(*) FROM commitments").fetchone()[0]
    original, again, duplicate = acks
    assert original["status"] == "accepted"
    assert again == original  # same id, same answer: a receiver drops the repeat
    assert duplicate["status"] == "duplicate" and duplicate["id"] != original["id"]
    assert duplicate["commitment_id"] == original["commitment_id"]
    assert inbound == [
        ("bce-1", "accepted", original["id"]),
        ("bce-1", "accepted", original["id"]),
        ("bce-1", "duplicate", duplicate["id"]),
    ]
    assert commitments == 1


def test_every_hostile_payload_gets_exactly_one_rejection_ack_and_one_inbound_row(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)
        for _, payload, _ in HOSTILE.values():
            inbound = Inbound(f"{BASE}/{TOPIC}", payload, 1, False, 1)
            run(desk.handle(inbound, TOPIC))
        acks = queued(store, "market/ack")
        rows = store.db.execute("SELECT status, reason, ack_id FROM inbound").fetchall()
    distinct = {payload for _, payload, _ in HOSTILE.values()}
    assert len(acks) == len(rows) == len(distinct) == len(HOSTILE)
    assert all(a["status"] == "rejected" and len(a["reason"]) < 300 for a in acks)
    assert [(a["status"], a["reason"], a["id"]) for a in acks] == rows
