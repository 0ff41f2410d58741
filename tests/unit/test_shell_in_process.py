"""The daemon's shell in one process against fake devices: no socket, no broker, no process.

The control loop, the market desk, the outbox, the operator commands and the Daemon that
wires them run on a hand-moved clock, on a real Store in a temporary SQLite file. The MQTT
link is a real, never-connected MqttLink, except in the one outbox test that needs the broker
to take and acknowledge messages: there a recording subclass of it stands in for the broker.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.config.loader import Site, load_site
from flexedge.contract.wire import iso
from flexedge.controller.core.model import Commitment, RefType
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.daemon import Daemon
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.mqtt import Inbound, MqttLink
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run

BASE = "flexedge/fake-site"
LEASE_S = 10
MAX_KW = 5.0


class Clock:
    """The time the shell sees; it moves only when the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_site(tmp_path: Path) -> Site:
    """One 10-kWh, 5-kW battery `b1` in a tariff and the D3A registry; 30-s slots, 1-s ticks.
    The Modbus address is never used: the tests hand the shell a fake device instead."""
    raw = {
        "site": "fake-site",
        "slot_seconds": 30,
        "control_period_s": 1.0,
        "log_db": str(tmp_path / "log.sqlite"),
        "balancing": {"enable_balancing_market": True},
        "asset_registry": {"b1": {"demand_rate_ct_per_kwh": 33, "supply_rate_ct_per_kwh": 35}},
        "tariffs": [
            {"id": "tariff-1", "assets": ["b1"], "exercise_ratio": 1.5, "price_per_kwh": 0.1}
        ],
        "devices": [
            {
                "name": "b1",
                "kind": "battery",
                "transport": "modbus-tcp",
                "host": "127.0.0.1",
                "port": 5020,
                "register_map": "battery_generic",
                "capacity_kwh": 10,
                "max_charge_kw": MAX_KW,
                "max_discharge_kw": MAX_KW,
                "setpoint_timeout_s": LEASE_S,
            }
        ],
    }
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_site(path)


def offline_link() -> MqttLink:
    return MqttLink(host="127.0.0.1", port=1, client_id="never-connected")


@contextmanager
def shell(tmp_path: Path, clock: Clock, battery: FakeDevice) -> Iterator[tuple[ControlLoop, Store]]:
    site = fake_site(tmp_path)
    store = Store(site.log_db_path)
    outbox = Outbox(store, offline_link(), BASE, clock)
    try:
        yield ControlLoop(site, {"b1": battery}, store, outbox, clock), store
    finally:
        store.close()


def queued(store: Store, topic: str) -> list[dict[str, Any]]:
    """The payloads waiting in the outbox for `topic` (below the site)."""
    return [
        json.loads(row.payload) if row.payload else {}  # empty: a retained topic cleared
        for row in store.unsent()
        if row.topic == f"{BASE}/{topic}"
    ]


def control_event(kwh: float, start: float, end: float) -> Commitment:
    return Commitment("c1", "c1", RefType.BALANCING_CONTROL, start, end, kwh, kwh, (("b1", 1.0),))


# -- the control loop ---------------------------------------------------------------------


def test_a_commitment_is_dispatched_within_limits_metered_closed_and_reported(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    kwh = 0.01  # 3.6 kW for 10 s
    with shell(tmp_path, clock, battery) as (control, store):

        async def scenario() -> None:
            await control.tick()  # the first reading, and the device's lease
            control.add(control_event(kwh, T0 + 1, T0 + 11))
            for second in range(1, 32):
                clock.now = T0 + second
                await control.tick()

        run(scenario())
        deliveries = queued(store, "market/delivery")
        measurements = queued(store, "market/measurement")
        assert control.commitments_in_progress() == []
    assert battery.leases == [LEASE_S]  # set once, when it first answered
    written = [p for p in battery.writes if p is not None]
    assert written and all(-MAX_KW <= p <= MAX_KW for p in written)
    assert written[1] == pytest.approx(3.6)  # the first tick of the window asks what it owes
    assert battery.writes[-1] == 0.0  # after the window: back to idle
    [report] = deliveries
    assert report["commitment_id"] == "c1"
    assert report["status"] == "delivered"
    assert report["delivered_kwh"] == pytest.approx(kwh, rel=0.02)
    # The slot [T0, T0 + 30) is measured once metered past its end, fully covered.
    [slot] = measurements
    assert slot["asset"] == "b1" and slot["coverage"] == 1.0
    assert slot["energy_kwh"] == pytest.approx(kwh, rel=0.02)


def test_a_device_that_stops_answering_is_backed_off_dropped_and_taken_back(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    seen: dict[str, Any] = {}
    with shell(tmp_path, clock, battery) as (control, _):

        async def scenario() -> None:
            await control.tick()
            battery.unavailable = True
            for second in range(1, 8):
                clock.now = T0 + second
                await control.tick()
                seen[f"fresh@{second}"] = control.is_fresh("b1", clock.now)
            battery.unavailable = False
            clock.now = T0 + 8  # the back-off (1, 2, then 4 s) ends here
            await control.tick()
            seen["fresh_again"] = control.summary(clock.now)["b1"]["available"]

        run(scenario())
    # Still counted on for 3 periods after its last answer, then not.
    assert seen["fresh@3"] and not seen["fresh@4"]
    # Tried at T0 + 1, 2 and 4 only (each failure doubles the wait), not every tick.
    assert battery.refused == ["read", "read", "read"]
    assert seen["fresh_again"]
    assert battery.leases == [LEASE_S, LEASE_S]  # it may have restarted: the lease is set again


def test_a_device_that_ignores_writes_is_probed_and_counted_on_once_it_takes_them(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5, has_heartbeat=True, setpoint_kw=0.0)
    battery.ignore_writes = True
    fresh: list[bool] = []
    with shell(tmp_path, clock, battery) as (control, store):

        async def scenario() -> None:
            control.add(control_event(0.05, T0, T0 + 60))
            for second in range(6):
                clock.now = T0 + second
                await control.tick()
                fresh.append(control.is_fresh("b1", clock.now))
            battery.ignore_writes = False
            clock.now = T0 + 6
            await control.tick()
            fresh.append(control.is_fresh("b1", clock.now))

        run(scenario())
        causes = sqlite3.connect(store.path).execute("SELECT cause, p_kw FROM setpoints").fetchall()
    # Three unconfirmed writes in a row and it is no longer counted on, until one confirms.
    assert fresh == [True, True, False, False, False, False, True]
    # Meanwhile it gets its safe setpoint (0 kW) and the heartbeat every tick.
    assert ("probe", 0.0) in causes
    assert battery.heartbeats == sorted(battery.heartbeats) and len(battery.heartbeats) == 7


# -- the market desk and the outbox -------------------------------------------------------


def balancing_control(
    msg_id: str, timeslot_start: float, kwh: Any, payment: float = 0.1
) -> Inbound:
    payload = {
        "v": 1,
        "type": "balancing_control",
        "id": msg_id,
        "tariff_id": "tariff-1",
        "timeslot_start": iso(timeslot_start),
        "kwh": kwh,
        "payment": payment,
    }
    return Inbound(f"{BASE}/market/balancing-control", json.dumps(payload).encode(), 1, False, 1)


def test_the_market_desk_acks_commits_dispatches_and_recognises_a_repeat(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    ticks_at: list[float] = []
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, ticks_at.append)

        async def scenario() -> None:
            await control.tick()
            desk.standing.refresh_orders()
            for message in (
                balancing_control("bce-1", T0, 0.01),
                balancing_control("bce-1", T0, 0.01),  # redelivered
                balancing_control("bce-1", T0, 0.02),  # another message reusing the id
                balancing_control("bce-2", T0, "lots"),
            ):
                await desk.handle(message, "market/balancing-control")
            await control.dispatched()

        run(scenario())
        [order] = queued(store, "market/balancing-order/tariff-1/up")
        acks = queued(store, "market/ack")
        open_now = control.commitments_in_progress()
    assert order["tariff_id"] == "tariff-1"
    accepted, again, duplicate, rejected = acks
    assert accepted["status"] == "accepted"
    assert accepted["accepted_kwh"] == pytest.approx(0.01)
    assert again == accepted  # the same ack, id and all: a receiver drops it
    assert duplicate["status"] == "duplicate" and duplicate["id"] != accepted["id"]
    assert duplicate["commitment_id"] == accepted["commitment_id"]
    assert rejected["ref"] == "bce-2" and "kwh" in rejected["reason"]
    [(commitment, _)] = open_now
    assert commitment.id == accepted["commitment_id"]
    assert ticks_at == [commitment.window_end]  # the daemon ticks again at its end
    # Written at once, without waiting for the next tick: 0.01 kWh in the 25 s left.
    assert battery.writes[-1] == pytest.approx(0.01 / (25 / 3600))


class RecordingLink(MqttLink):
    """Stands in for a connected broker: takes every publish and hands out mids; the test
    acknowledges them (PUBACK) by calling on_published."""

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=1, client_id="recording")
        self.up = True
        self.sent: list[tuple[str, bytes, int, bool]] = []

    @property
    def connected(self) -> bool:
        return self.up

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> int | None:
        if not self.up:
            return None
        self.sent.append((topic, payload, qos, retain))
        return len(self.sent)


def test_the_outbox_keeps_what_it_queued_until_the_broker_acknowledges_it(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    link = RecordingLink()
    link.up = False
    store = Store(tmp_path / "log.sqlite")
    try:
        outbox = Outbox(store, link, BASE, clock)
        with store.transaction():
            outbox.put("market/ack", {"id": "a1", "status": "accepted"})
            outbox.put("market/balancing-order/t1", {"id": "o1"}, retain=True)
        assert outbox.flush() == 0 and outbox.backlog() == 2  # no broker: nothing lost
        link.up = True
        assert outbox.flush() == 2
        assert [(t, q, r) for t, _, q, r in link.sent] == [
            (f"{BASE}/market/ack", 1, False),
            (f"{BASE}/market/balancing-order/t1", 1, True),
        ]
        assert outbox.flush() == 0  # in flight: not sent twice
        assert link.on_published is not None
        link.on_published(1)
        assert outbox.backlog() == 1  # only the acknowledged one is done
        outbox.reset_in_flight()  # a reconnect: the unacknowledged one goes again
        assert outbox.flush() == 1 and link.sent[-1][0] == f"{BASE}/market/balancing-order/t1"
    finally:
        store.close()


# -- the daemon, handed its devices ---------------------------------------------------------


def test_the_daemon_runs_on_the_devices_it_is_handed_and_answers_the_operator(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    daemon = Daemon(fake_site(tmp_path), clock, devices={"b1": battery})
    try:
        run(daemon.control.tick())
        daemon.market.standing.refresh_orders()
        status = daemon.commands.status()
        changed = daemon.commands.set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": 1.2}')
        unknown = daemon.commands.set_order(b'{"tariff_id": "nope", "exercise_ratio": 0.5}')
        orders = queued(daemon.store, "market/balancing-order/tariff-1/up")
    finally:
        daemon.store.close()
    assert daemon.devices == {"b1": battery} and battery.reads > 0
    assert status["state"] == "starting" and status["assets"]["b1"]["available"]
    assert status["open_commitments"] == [] and status["outbox_backlog"] == 1
    assert changed["ok"] and changed["exercise_ratio"] == 1.2
    assert changed["published_ratio"] == 1.2
    assert [o["exercise_ratio"] for o in orders] == [1.5, 1.2]
    assert unknown == {"ok": False, "error": "unknown tariff 'nope'"}


def test_up_and_down_orders_stand_side_by_side_and_are_withdrawn_one_by_one(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    daemon = Daemon(fake_site(tmp_path), clock, devices={"b1": battery})
    standing = daemon.market.standing
    set_order = daemon.commands.set_order
    try:
        run(daemon.control.tick())
        standing.clear_stale_orders()
        standing.refresh_orders()
        down = set_order(
            b'{"tariff_id": "tariff-1", "exercise_ratio": -0.5, "price_per_kwh": -0.05}'
        )
        in_force = {o.direction: o.exercise_ratio for o in standing.orders_in_force()}
        refused = [
            set_order(b'{"tariff_id": "tariff-1", "withdraw": "up", "exercise_ratio": -0.5}'),
            set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": -0.5, "direction": "up"}'),
            set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": -1.5}'),
            set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": 2.5}'),
        ]
        unchanged = {o.direction: o.exercise_ratio for o in standing.orders_in_force()}
        withdrawn = set_order(b'{"tariff_id": "tariff-1", "withdraw": "up"}')
        again = set_order(b'{"tariff_id": "tariff-1", "withdraw": "up"}')
        up_topic = queued(daemon.store, "market/balancing-order/tariff-1/up")
        down_topic = queued(daemon.store, "market/balancing-order/tariff-1/down")
        old_topic = queued(daemon.store, "market/balancing-order/tariff-1")
        left = [o.direction for o in standing.orders_in_force()]
    finally:
        daemon.store.close()
    assert down["ok"] and down["direction"] == "down" and down["published_ratio"] == -0.5
    assert in_force == {"up": 1.5, "down": -0.5}  # the down order left the up order
    assert [r["ok"] for r in refused] == [False] * 4
    assert "withdraw up: exercise_ratio -0.5 is a down order" in refused[0]["error"]
    assert "exercise_ratio -0.5 is a down order, not an up order" in refused[1]["error"]
    assert "outside the down range [-1, 0)" in refused[2]["error"]
    assert "outside the up range (0, 2]" in refused[3]["error"]
    assert unchanged == in_force
    assert withdrawn["ok"] and withdrawn["exercise_ratio"] is None
    assert withdrawn["orders"] == [
        {
            "tariff_id": "tariff-1",
            "direction": "down",
            "exercise_ratio": -0.5,
            "price_per_kwh": -0.05,
        }
    ]
    assert again == {"ok": False, "error": "tariff 'tariff-1' has no up order to withdraw"}
    # At start the old single-order topic and the empty direction are cleared; the up order
    # is published, then cleared when withdrawn (an empty retained message).
    assert old_topic == [{}]
    assert [o.get("exercise_ratio") for o in up_topic] == [1.5, None]
    assert [o.get("exercise_ratio") for o in down_topic] == [None, -0.5]
    assert left == ["down"]
