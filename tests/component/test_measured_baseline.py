"""A load measured against what it really drew before dispatch, not its declared profile.

The heater's profile says 1 kW but it draws 4 kW. With `baseline: measured` the controller
learns the 4 kW from telemetry, freezes it when the commitment starts, and both dispatch and
the report use it.
"""

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
from flexedge.tools.harness.broker import free_port
from tests.support.control_harness import offline_control
from tests.support.harness import run, write_site_file

# The control period: these tests tick the loop on the wall clock as the daemon does, so a
# sleep between ticks is the passing time under test, not a wait for something to happen.
PERIOD = 0.5
SITE = """\
site: measured
control_period_s: {period}
devices:
  - name: heater
    kind: flexible_load
    port: {port}
    baseline_profile: [[0, 1.0]]
    simulator: {{}}
    curtailable_share: 0.5
    max_kw: 6
    baseline: measured
    baseline_window_s: 5
"""
SIM_SITE = SITE.replace("[[0, 1.0]]", "[[0, 4.0]]")  # what the heater really draws


async def scenario(tmp_path: Path) -> dict[str, Any]:
    port = free_port()
    sim_file = write_site_file(tmp_path, SIM_SITE.format(period=PERIOD, port=port), "sim.yaml")
    sim = await serve_site(load_site(sim_file))
    site = load_site(write_site_file(tmp_path, SITE.format(period=PERIOD, port=port)))
    try:
        async with offline_control(site, tmp_path / "log.sqlite") as control:
            for _ in range(12):  # 6 s of telemetry: the window is 5 s
                await control.tick()
                await asyncio.sleep(PERIOD)
            learned = control.assets["heater"].baseline_kw(time.time())
            now = time.time()
            energy = 1.0 * 8 / 3600  # curtail 1 kW for 8 s
            control.add(
                Commitment(
                    "c1",
                    "c1",
                    RefType.BALANCING_CONTROL,
                    now,
                    now + 8,
                    energy,
                    energy,
                    (("heater", 1.0),),
                )
            )
            end = now + 8
            while time.time() < end - PERIOD:
                await control.tick()
                await asyncio.sleep(PERIOD)
            # The daemon ticks exactly at a window's end, so the last interval is metered
            # there.
            await asyncio.sleep(max(0.0, end - time.time()))
            for _ in range(3):
                await control.tick()
                await asyncio.sleep(PERIOD)
    finally:
        await sim.stop()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    caps = [
        p
        for (p,) in db.execute(
            "SELECT p_kw FROM setpoints WHERE cause = 'tick' AND p_kw IS NOT NULL"
        )
    ]
    report = json.loads(db.execute("SELECT payload FROM reports").fetchone()[0])
    return {"learned": learned, "caps": caps, "report": report, "energy": energy}


def test_load_is_measured_against_what_it_drew_before_dispatch(tmp_path: Path) -> None:
    seen = run(scenario(tmp_path))
    assert seen["learned"] == pytest.approx(-4.0, abs=0.05)  # not the declared -1 kW
    # Curtailing 1 kW from 4 kW caps it near 3 kW (the profile would have said 0 kW).
    assert seen["caps"] and all(-3.5 <= p <= -2.5 for p in seen["caps"]), seen["caps"]
    report = seen["report"]
    assert report["assets"][0]["baseline_kw"] == pytest.approx(-4.0, abs=0.05)
    assert report["delivered_kwh"] == pytest.approx(seen["energy"], rel=0.02)
