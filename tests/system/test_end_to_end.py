"""The whole product over real sockets: Mosquitto, the Modbus simulator and the daemon.

A cleared D3A offer and an exercised Power TAC order each get an `accepted` ack and, after
their window, a delivery report whose metered energy is within 2 % of the accepted energy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.contract.wire import iso
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 10


@pytest.fixture(scope="module")
def site(broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("e2e")
    with running_site(workdir, broker, slot_seconds=SLOT) as running:
        yield running


def test_cleared_offer_is_delivered_and_reported(site: RunningSite) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        market = await open_market(site)
        try:
            # Offers are not retained: wait for those of the next slot, published after we
            # subscribed.
            now = time.time()
            start = now - now % SLOT + SLOT
            offer = await market.wait_for(
                lambda m: (
                    m.get("type") == "balancing_offer"
                    and m["energy_kwh"] > 0
                    and m["slot_start"] == iso(start)
                ),
                SLOT + 5,
            )
            trade_id = market.trade(offer, round(offer["energy_kwh"] * 0.5, 4))
            ack = await market.ack_for(trade_id)
            report = await market.report_for(ack["commitment_id"], SLOT + 10)
            measured = await market.wait_for(
                lambda m: (
                    m.get("type") == "measurement"
                    and m["asset"] == "battery-1"
                    and m["slot_start"] == iso(start)
                ),
                10,
            )
            return ack, report, measured
        finally:
            await market.stop()

    ack, report, measured = run(scenario())
    # The slot's metered energy is the trade's: the battery was idle otherwise.
    assert measured["coverage"] == 1.0
    assert measured["energy_kwh"] == pytest.approx(report["delivered_kwh"], rel=0.02)
    assert ack["status"] == "accepted", ack
    assert report["status"] == "delivered", report
    accepted = float(report["accepted_kwh"])
    assert accepted > 0
    assert abs(float(report["delivered_kwh"]) - accepted) <= 0.02 * accepted
    assert report["coverage"] == 1.0
    assets = report["assets"]
    assert isinstance(assets, list) and assets[0]["asset"] == "battery-1"
    rows = site.query(
        "SELECT state, delivered_kwh FROM commitments WHERE id = ?", ack["commitment_id"]
    )
    assert rows and rows[0][0] == "reported"


def test_exercised_order_is_delivered_and_reported(site: RunningSite) -> None:
    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        market = await open_market(site)
        try:
            order = await market.wait_for(lambda m: m.get("type") == "balancing_order", 10)
            start = await slot_with(SLOT, 7, after_start_s=0.5)
            # Down-regulation is not on offer (ratio 1.5): half of the up bound is.
            hours = (start + SLOT - time.time()) / 3600
            kwh = round(0.5 * (order["exercise_ratio"] - 1) * 5.0 * hours, 5)
            event_id = market.control(order["tariff_id"], start, kwh, payment=0.1)
            ack = await market.ack_for(event_id)
            report = await market.report_for(ack["commitment_id"], SLOT + 10)
            return ack, report
        finally:
            await market.stop()

    ack, report = run(scenario())
    assert ack["status"] == "accepted", ack
    accepted = float(report["accepted_kwh"])  # type: ignore[arg-type]
    assert abs(float(report["delivered_kwh"]) - accepted) <= 0.02 * accepted  # type: ignore[arg-type]
    assert report["status"] == "delivered"
    setpoints = site.query("SELECT COUNT(*) FROM setpoints WHERE cause = ?", ack["commitment_id"])
    assert setpoints[0][0] == 1  # the event-driven write, before any tick
