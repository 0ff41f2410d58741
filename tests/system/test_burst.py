"""A burst of 1,000 Power TAC control events on one battery in one timeslot: every one is
accepted, delivered within the site's tolerance and reported, and the control tick runs every
second throughout (no tick skipped while the burst is admitted or the window closes)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 120
EVENTS = 1000
# 1,000 x 0.12 Wh = 0.12 kWh in what is left of a 120-s slot: about 4 kW of the order's bound.
KWH_EACH = 1.2e-4
TOLERANCE = 0.02
CONTROL_PERIOD_S = 1.0


@pytest.fixture
def site(broker: PrivateBroker, tmp_path: Path) -> Iterator[RunningSite]:
    with running_site(tmp_path, broker, slot_seconds=SLOT) as running:
        yield running


@pytest.mark.timeout(480)
def test_a_burst_of_1000_control_events_is_delivered_and_skips_no_tick(
    site: RunningSite,
) -> None:
    async def scenario() -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
        market = await open_market(site)
        try:
            await market.wait_for(
                lambda m: m.get("type") == "balancing_order" and m["tariff_id"] == "tariff-1", 10
            )
            slot = await slot_with(SLOT, 110)
            refs = [market.control("tariff-1", slot, KWH_EACH, 0.01) for _ in range(EVENTS)]
            acks = [await market.ack_for(ref, 90) for ref in refs]
            reports = [
                await market.report_for(ack["commitment_id"], SLOT + 60)
                for ack in acks
                if ack["status"] == "accepted"
            ]
            return slot, acks, reports
        finally:
            await market.stop()

    slot, acks, reports = run(scenario())
    assert [a["status"] for a in acks] == ["accepted"] * EVENTS, {
        a["reason"] for a in acks if a["status"] != "accepted"
    }
    assert len(reports) == EVENTS
    for report in reports:
        assert report["status"] == "delivered", report
        assert report["delivered_kwh"] == pytest.approx(report["accepted_kwh"], rel=TOLERANCE)
    # Every tick logs the battery's telemetry: a gap of more than 1.5 periods is a skipped tick.
    ticks = [
        row[0]
        for row in site.query(
            "SELECT DISTINCT ts FROM telemetry WHERE ts BETWEEN ? AND ? ORDER BY ts",
            slot,
            slot + SLOT,
        )
    ]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert ticks and ticks[-1] - ticks[0] > SLOT - 15, (ticks[:1], ticks[-1:])
    assert max(gaps) <= 1.5 * CONTROL_PERIOD_S, max(gaps)
    assert time.time() > slot + SLOT  # the window had closed when the reports came
