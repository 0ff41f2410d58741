"""A flexible load in the D3A balancing market, over real sockets: after a spot trade in which
it bought energy, it offers to curtail part of it; a balancing trade on that offer is
delivered by curtailing the load and reported against its declared baseline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import run
from tests.support.site_process import RunningSite, running_site, slot_with

SLOT = 20
LOAD = {
    "name": "heater",
    "kind": "flexible_load",
    "host": "127.0.0.1",
    "port": 1,
    "baseline_profile": [[0, 4.0]],
    "curtailable_share": 0.5,
    "max_kw": 6,
    "control": "limit",
}


@pytest.fixture(scope="module")
def site(broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("load-market")
    with running_site(
        workdir,
        broker,
        slot_seconds=SLOT,
        devices=[LOAD],
        asset_registry={"heater": {"demand_rate_ct_per_kwh": 20, "supply_rate_ct_per_kwh": 45}},
        tariffs=[
            {"id": "heat-tariff", "assets": ["heater"], "exercise_ratio": 0.5, "price_per_kwh": 0.1}
        ],
    ) as running:
        yield running


def test_spot_trade_then_balancing_trade_curtails_the_load(site: RunningSite) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            start = await slot_with(SLOT, 14)
            market.spot_trade("heater", start, 1.0, side="buy", rate_ct_per_kwh=25.0)
            offer = await market.wait_for(
                lambda m: (
                    m.get("type") == "balancing_offer"
                    and m["asset"] == "heater"
                    and m["energy_kwh"] > 0
                ),
                5,
            )
            trade_id = market.trade(offer, offer["energy_kwh"])
            ack = await market.ack_for(trade_id)
            report = await market.report_for(ack["commitment_id"], SLOT + 10)
            return offer, ack, report
        finally:
            await market.stop()

    offer, ack, report = run(scenario())
    # 10 % of the 1 kWh bought, within 2 kW curtailable over the time left in the slot.
    assert 0 < offer["energy_kwh"] <= 0.1
    assert offer["rate_ct_per_kwh"] == 45
    assert ack["status"] == "accepted", ack
    assert report["assets"][0]["baseline_kw"] == -4.0
    accepted = report["accepted_kwh"]
    assert abs(report["delivered_kwh"] - accepted) <= 0.02 * accepted, report
    capped = site.query(
        "SELECT MIN(p_kw) FROM setpoints WHERE asset = 'heater' AND p_kw IS NOT NULL"
    )[0][0]
    assert capped >= -4.0  # a cap, never more than its demand, never below its firm part


# About 40 s: it waits for the next whole timeslot, then for the report after it.
@pytest.mark.timeout(240)
def test_economic_control_curtails_the_load_by_its_ratio(site: RunningSite) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            now = time.time()
            start = now - now % SLOT + SLOT  # a whole timeslot, after the other test's
            await asyncio.sleep(start + 0.3 - now)  # until it starts: the clock is the condition
            ref = market.economic_control("heat-tariff", start, 0.5)
            ack = await market.ack_for(ref)
            report = await market.report_for(ack["commitment_id"], SLOT + 10)
            return ack, report
        finally:
            await market.stop()

    ack, report = run(scenario())
    assert ack["status"] == "accepted", ack
    assert report["ref_type"] == "economic_control" and report["settlement"] == 0.0
    # As Power TAC applies it: min(ratio, max curtailment) x usage = min(0.5, 0.5) x 4 kW, for
    # the rest of the timeslot.
    window_h = (SLOT - 0.3) / 3600
    assert report["accepted_kwh"] == pytest.approx(min(0.5, 0.5) * 4.0 * window_h, rel=0.05)
    assert abs(report["delivered_kwh"] - report["accepted_kwh"]) <= 0.02 * report["accepted_kwh"]


# About 40 s, as above: economic control takes precedence over a balancing event before it.
@pytest.mark.timeout(240)
def test_economic_control_after_a_balancing_event_is_served_first(site: RunningSite) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            now = time.time()
            start = now - now % SLOT + SLOT
            await asyncio.sleep(start + 0.3 - now)  # until it starts: the clock is the condition
            balancing_ref = market.control("heat-tariff", start, 1.0, payment=1.0)
            balancing = await market.ack_for(balancing_ref)
            economic_ref = market.economic_control("heat-tariff", start, 0.4)
            economic = await market.ack_for(economic_ref)
            reports = [
                await market.report_for(ack["commitment_id"], SLOT + 10)
                for ack in (balancing, economic)
            ]
            return economic, reports[0], reports[1]
        finally:
            await market.stop()

    economic_ack, balancing, economic = run(scenario())
    assert "takes precedence" in economic_ack["reason"], economic_ack
    assert balancing["commitment_id"] in economic_ack["reason"], economic_ack
    # The economic control gets its whole share, 0.4 x 4 kW of the 2 kW curtailable; the
    # balancing event accepted before it (0.5 of 2 kW) only the 0.4 kW left: partial.
    assert (
        abs(economic["delivered_kwh"] - economic["accepted_kwh"]) <= 0.02 * economic["accepted_kwh"]
    ), economic
    window_h = (SLOT - 0.3) / 3600
    assert balancing["status"] == "partial", balancing
    assert balancing["delivered_kwh"] == pytest.approx(0.4 * window_h, rel=0.1), balancing
