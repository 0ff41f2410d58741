"""The market desk on residual offer ids (gsy-e), in one process on a fake battery: a partial
trade announcing a residual id, trades on that id, the bad ones, and the same count after a
restart of the shell on the same log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flexedge.contract.wire import iso
from flexedge.controller.core.model import Offer
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.mqtt import Inbound
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import BASE, Clock, queued, shell

RATE = 35.0  # b1's supply rate in the fake site


def balancing_trade(msg_id: str, offer_id: str, kwh: float, residual: str | None = None) -> Inbound:
    payload: dict[str, Any] = {
        "v": 1,
        "type": "balancing_trade",
        "id": msg_id,
        "offer_id": offer_id,
        "asset": "b1",
        "slot_start": iso(T0),
        "energy_kwh": kwh,
        "price_ct": round(RATE * abs(kwh), 6),
    }
    if residual is not None:
        payload["residual_offer_id"] = residual
    return Inbound(f"{BASE}/market/balancing-trade", json.dumps(payload).encode(), 1, False, 1)


def acks_by_ref(store: Any) -> dict[str, dict[str, Any]]:
    return {a["ref"]: a for a in queued(store, "market/ack")}


def test_trades_on_a_residual_id_count_once_and_bad_ones_change_nothing_across_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 2)
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)

        async def first_life() -> list[Offer]:
            await control.tick()
            offers = desk.publish_offers()
            supply = next(o for o in offers if o.energy_kwh > 0)
            demand = next(o for o in offers if o.energy_kwh < 0)
            part = round(supply.energy_kwh / 4, 4)
            for message in (
                balancing_trade("t-part", supply.id, part, residual="rest-1"),
                balancing_trade("t-never", "rest-never", part),
                balancing_trade("t-beyond", "rest-1", round(supply.energy_kwh, 4)),
                balancing_trade("t-existing", "rest-1", part, residual=demand.id),
                balancing_trade("t-reused", "rest-1", part, residual="rest-1"),
                balancing_trade("t-rest", "rest-1", part, residual="rest-2"),
            ):
                await desk.handle(message, "market/balancing-trade")
            await control.dispatched()
            return [supply, demand]

        supply, demand = run(first_life())
        acks = acks_by_ref(store)
        rows = store.db.execute(
            "SELECT ref, offer_id, residual_offer_id FROM commitments"
        ).fetchall()
    part = round(supply.energy_kwh / 4, 4)
    assert {k: (a["status"], a["reason"], a["commitment_id"]) for k, a in acks.items()} == {
        "t-part": ("accepted", "", "cm-t-part"),
        "t-never": ("rejected", "unknown offer 'rest-never'", None),
        "t-beyond": (
            "rejected",
            f"energy_kwh {supply.energy_kwh:.4f} kWh exceeds what is left of offer 'rest-1' "
            f"(the rest of offer {supply.id!r}) ({supply.energy_kwh - part:.4f} kWh of "
            f"{supply.energy_kwh:.4f} kWh)",
            None,
        ),
        "t-existing": (
            "rejected",
            f"residual_offer_id {demand.id!r} is the id of an existing offer",
            None,
        ),
        "t-reused": (
            "rejected",
            f"residual_offer_id 'rest-1' was already announced for offer {supply.id!r}",
            None,
        ),
        "t-rest": ("accepted", "", "cm-t-rest"),
    }
    assert acks["t-part"]["accepted_kwh"] == pytest.approx(part)
    assert acks["t-rest"]["accepted_kwh"] == pytest.approx(part)
    # Both trades are logged against the offer the site published, with the ids they announced.
    assert sorted(rows) == [("t-part", supply.id, "rest-1"), ("t-rest", supply.id, "rest-2")]

    # The shell starts again at the same instant: only the log carries what happened.
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control, store):
        desk = MarketDesk(control.site, control, store, control.outbox, clock, lambda _: None)
        desk.restore()
        left = round(supply.energy_kwh - 2 * part, 4)

        async def second_life() -> None:
            await control.tick()
            for message in (
                # Either residual id names the same rest: what is left is counted once.
                balancing_trade("t-over", "rest-1", round(left + 0.001, 4)),
                balancing_trade("t-last", "rest-2", left),
                balancing_trade("t-more", "rest-1", 0.001),
            ):
                await desk.handle(message, "market/balancing-trade")
            await control.dispatched()

        run(second_life())
        acks = acks_by_ref(store)
    assert acks["t-over"]["status"] == "rejected"
    assert "exceeds what is left of offer 'rest-1'" in acks["t-over"]["reason"]
    assert (acks["t-last"]["status"], acks["t-last"]["reason"]) == ("accepted", "")
    assert acks["t-last"]["accepted_kwh"] == pytest.approx(left)
    assert acks["t-more"]["status"] == "rejected"
    assert f"(0.0000 kWh of {supply.energy_kwh:.4f} kWh)" in acks["t-more"]["reason"]
