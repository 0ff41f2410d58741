"""Merit order at the controller, over real sockets: a balancing trade's battery is lost
mid-delivery and the cheapest backup takes over its share within one control tick; the
delivery report credits both, and the pricier backup is never touched."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from flexedge.config.loader import load_site
from flexedge.controller.core.model import Commitment, RefType
from flexedge.simulators.devices.modbus_server import serve_site
from tests.support.control_harness import batteries_site, offline_control
from tests.support.harness import run, write_site_file

# The control period: these tests tick the loop on the wall clock as the daemon does, so a
# sleep between ticks is the passing time under test, not a wait for something to happen.
PERIOD = 0.2
WINDOW_S = 12.0
KWH = 0.01  # 3 kW over 12 s


async def lose_the_traded_battery(tmp_path: Path) -> dict[str, Any]:
    site_file = write_site_file(tmp_path, batteries_site("merit-site", PERIOD, ("b1", "b2", "b3")))
    site = load_site(site_file)
    sim = await serve_site(site)
    seen: dict[str, Any] = {"ticks": []}
    try:
        async with offline_control(site, tmp_path / "log.sqlite") as control:
            await control.tick()  # first readings
            now = time.time()
            # As admission builds a D3A trade on b1: b2 then b3 back it up, cheapest first.
            control.add(
                Commitment(
                    "cm-t1",
                    "t1",
                    RefType.BALANCING_TRADE,
                    now,
                    now + WINDOW_S,
                    KWH,
                    KWH,
                    (("b1", 1.0),),
                    settlement=0.35,
                    backups=("b2", "b3"),
                )
            )
            lost = False
            while time.time() < now + WINDOW_S + 10 * PERIOD:
                await control.tick()
                fresh = control.is_fresh("b1", time.time())
                seen["ticks"].append(
                    {
                        "b1_fresh": fresh,
                        "allocations": {n: dict(a) for n, a in control.allocations.items()},
                    }
                )
                if not lost and time.time() > now + WINDOW_S / 3:
                    sim.faults("b1").drop = True
                    lost = True
                await asyncio.sleep(PERIOD)
    finally:
        await sim.stop()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    seen["reports"] = [json.loads(r[0]) for r in db.execute("SELECT payload FROM reports")]
    db.close()
    return seen


def test_lost_battery_hands_its_trade_to_the_cheapest_backup(tmp_path: Path) -> None:
    seen = run(lose_the_traded_battery(tmp_path))
    ticks = seen["ticks"]
    before = [t for t in ticks if t["b1_fresh"]]
    # While b1 delivers, the backups stay out of it.
    assert before and all("cm-t1" not in t["allocations"].get("b2", {}) for t in before)
    first_stale = next(i for i, t in enumerate(ticks) if not t["b1_fresh"])
    # The tick that finds b1 stale already puts the whole trade on b2 (3 kW and rising, as
    # the closed loop makes up for what b1 delivered unseen); b3 stays out of it.
    on_b2 = ticks[first_stale]["allocations"]["b2"].get("cm-t1", 0.0)
    assert on_b2 >= 2.9
    assert all("cm-t1" not in t["allocations"].get("b3", {}) for t in ticks)
    [report] = seen["reports"]
    assert report["commitment_id"] == "cm-t1"
    assert report["status"] == "delivered", report
    assert report["delivered_kwh"] == pytest.approx(KWH, rel=0.02)
    by_asset = {a["asset"]: a for a in report["assets"]}
    assert list(by_asset) == ["b1", "b2"]  # the share asset, then the backup that covered
    assert by_asset["b1"]["delivered_kwh"] > 0.002  # what it delivered before it was lost
    assert by_asset["b2"]["delivered_kwh"] > 0.004
    assert by_asset["b1"]["baseline_kw"] == by_asset["b2"]["baseline_kw"] == 0.0
    # b1's silence shows as a coverage gap; it is the share asset the market bought from.
    assert report["coverage"] < 0.8
