"""A load's declared profile and the simulated load agree: both are by UTC second of day.

The simulator runs on its default clock (time.monotonic, for durations), the controller on
the wall clock; with a steep daily profile and no dispatch at all, each slot's measurement
(delivery against the declared baseline) must be about nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

from flexedge.config.loader import load_site
from flexedge.controller.core.kinds import profile_kw
from flexedge.simulators.devices.modbus_server import serve_site
from flexedge.tools.harness.broker import free_port
from tests.support.control_harness import offline_control
from tests.support.harness import run, write_site_file

PERIOD = 0.5
SLOT_S = 10
# 1 kW at midnight UTC up to 20 kW at noon and back: any two times of day a few hours apart
# give very different baselines.
PROFILE = ((0.0, 1.0), (43200.0, 20.0))
SITE = f"""\
site: clock
control_period_s: {PERIOD}
slot_seconds: {SLOT_S}
devices:
  - name: heater
    kind: flexible_load
    port: {{port}}
    baseline_profile: {[list(p) for p in PROFILE]}
    curtailable_share: 0.5
    max_kw: 25
"""


async def full_slot_measurement(tmp_path: Path) -> tuple[float, float]:
    """(slot start, energy delivered) of the first fully covered slot."""
    site = load_site(write_site_file(tmp_path, SITE.format(port=free_port())))
    sim = await serve_site(site)  # the simulator's own default clock
    db_path = tmp_path / "log.sqlite"
    try:
        async with offline_control(site, db_path) as control:
            deadline = time.monotonic() + 4 * SLOT_S
            while time.monotonic() < deadline:
                # The loop ticks on the wall clock as the daemon does: the sleep is the time
                # passing under test.
                await control.tick()
                # What went out on market/measurement, as the store logged it.
                full = control.store.db.execute(
                    "SELECT slot_start, energy_kwh FROM measurements WHERE coverage >= 0.95"
                ).fetchall()
                if full:
                    start, kwh = full[0]
                    return datetime.fromisoformat(start).timestamp(), float(kwh)
                await asyncio.sleep(PERIOD)
    finally:
        await sim.stop()
    raise AssertionError(f"no fully covered slot measured within {4 * SLOT_S} s")


def test_a_sloped_profile_without_dispatch_measures_about_nothing(tmp_path: Path) -> None:
    slot_start, delivered = run(full_slot_measurement(tmp_path))
    baseline_kwh = profile_kw(PROFILE, slot_start + SLOT_S / 2) * SLOT_S / 3600
    assert baseline_kwh > 0.002  # at least 1 kW for 10 s
    assert abs(delivered) <= 0.03 * baseline_kwh, (slot_start, delivered, baseline_kwh)
