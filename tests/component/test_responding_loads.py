"""The closed loop against the demo site's simulated heat pump (0.5 s before it follows a
cap, then a 1-s lag, 30 W of meter noise) and generator (0.5 s before it follows a setpoint,
then 5 kW/s), over Modbus TCP: each shows its delay, and each commitment is still delivered
within 2 %."""

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
from tests.support.control_harness import offline_control
from tests.support.harness import demo_site_file, run

# The control period: the loop ticks on the wall clock as the daemon does, so a sleep between
# ticks is the passing time under test, not a wait for something to happen.
PERIOD = 0.5
WINDOW_S = 10.0
SHED_KWH = 2.0 * WINDOW_S / 3600  # the heat pump draws 2 kW less for the window
RUN_KWH = 5.0 * WINDOW_S / 3600  # the generator runs at 5 kW for the window


async def scenario(tmp_path: Path) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    site = load_site(
        demo_site_file(
            tmp_path, site={"control_period_s": PERIOD}, device={"setpoint_timeout_s": 30}
        )
    )
    sim = await serve_site(site)
    first_reads: dict[str, float] = {}
    try:
        async with offline_control(site, tmp_path / "log.sqlite") as control:
            for name in ("heat-pump", "genset"):
                await control.devices[name].connect()
            for _ in range(3):
                await control.tick()
                await asyncio.sleep(PERIOD)
            before = {n: control.readings[n].p_kw for n in ("heat-pump", "genset")}
            start = time.time()
            for cid, asset, kwh in (("shed", "heat-pump", SHED_KWH), ("run", "genset", RUN_KWH)):
                window = (start, start + WINDOW_S)
                shares = ((asset, 1.0),)
                control.add(
                    Commitment(cid, cid, RefType.BALANCING_CONTROL, *window, kwh, kwh, shares)
                )
            await control.tick()  # the writes are taken; the power is not there yet
            for name, p_kw in before.items():
                first_reads[name] = control.readings[name].p_kw - p_kw
            while time.time() < start + WINDOW_S + 2 * PERIOD:
                await asyncio.sleep(PERIOD)
                await control.tick()
    finally:
        await sim.stop()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    reports = [json.loads(p) for (p,) in db.execute("SELECT payload FROM reports")]
    return first_reads, {r["commitment_id"]: r for r in reports}


@pytest.mark.timeout(60)
def test_a_lagging_heat_pump_and_a_slow_generator_are_still_delivered(tmp_path: Path) -> None:
    first_reads, reports = run(scenario(tmp_path))
    assert abs(first_reads["heat-pump"]) < 0.2 and abs(first_reads["genset"]) < 0.2
    assert sorted(reports) == ["run", "shed"]
    assert reports["shed"]["status"] == "delivered", reports["shed"]
    assert reports["shed"]["delivered_kwh"] == pytest.approx(SHED_KWH, rel=0.02)
    assert reports["run"]["status"] == "delivered", reports["run"]
    assert reports["run"]["delivered_kwh"] == pytest.approx(RUN_KWH, rel=0.02)
