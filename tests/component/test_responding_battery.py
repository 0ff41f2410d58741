"""The closed loop against a simulated battery that responds like an inverter (0.5 s before
it follows a setpoint, 5 kW/s ramp, 20 W of meter noise), over Modbus TCP: the battery shows
the delay, and the commitment is still delivered within 2 %."""

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

# The control period: the loop ticks on the wall clock as the daemon does, so a sleep between
# ticks is the passing time under test, not a wait for something to happen.
PERIOD = 0.5
WINDOW_S = 10.0
KWH = 3.0 * WINDOW_S / 3600  # 3 kW for the window
DYNAMICS = {"response_delay_s": 0.5, "ramp_kw_per_s": 5.0, "measurement_noise_kw": 0.02}


async def scenario(tmp_path: Path) -> tuple[list[float], dict[str, Any]]:
    text = batteries_site("responding", PERIOD, ("b1",), setpoint_timeout_s=30, simulator=DYNAMICS)
    site = load_site(write_site_file(tmp_path, text))
    sim = await serve_site(site)
    first_reads: list[float] = []
    try:
        async with offline_control(site, tmp_path / "log.sqlite") as control:
            await control.devices["b1"].connect()
            for _ in range(3):
                await control.tick()
                await asyncio.sleep(PERIOD)
            start = time.time()
            control.add(
                Commitment(
                    "c1",
                    "c1",
                    RefType.BALANCING_CONTROL,
                    start,
                    start + WINDOW_S,
                    KWH,
                    KWH,
                    (("b1", 1.0),),
                )
            )
            await control.tick()  # writes 3 kW; its read-back comes before the stage moves
            first_reads.append(control.readings["b1"].p_kw)
            while time.time() < start + WINDOW_S + 2 * PERIOD:
                await asyncio.sleep(PERIOD)
                await control.tick()
    finally:
        await sim.stop()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    [(payload,)] = db.execute("SELECT payload FROM reports").fetchall()
    return first_reads, json.loads(payload)


@pytest.mark.timeout(60)
def test_a_battery_with_a_response_delay_and_a_ramp_is_still_delivered(tmp_path: Path) -> None:
    first_reads, report = run(scenario(tmp_path))
    assert abs(first_reads[0]) < 0.1  # the write is taken, the power not yet there
    assert report["status"] == "delivered", report
    assert report["delivered_kwh"] == pytest.approx(KWH, rel=0.02)
