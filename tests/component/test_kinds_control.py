"""The control loop drives every device kind on every transport within its limits.

One site: a battery and a generator over Modbus TCP, a continuous load over Modbus RTU (pty
pair) and a relay smart plug over MQTT. One up-regulation commitment is spread over all of
them. Every setpoint the controller wrote is checked against the kind's limits, and the metered
energy against the commitment.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from flexedge.config.loader import load_site
from flexedge.controller.core.model import Commitment, RefType
from flexedge.simulators.devices.modbus_server import serve_site
from flexedge.simulators.devices.mqtt_devices import serve_mqtt_devices
from flexedge.tools.harness.broker import PrivateBroker, free_port
from tests.support.control_harness import offline_control
from tests.support.harness import run, write_site_file
from tests.support.pty_pair import NullModem

# The control period: these tests tick the loop on the wall clock as the daemon does, so a
# sleep between ticks is the passing time under test, not a wait for something to happen.
PERIOD = 0.5
WINDOW_S = 12.0
SITE = """\
site: kinds
control_period_s: {period}
mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
devices:
  - {{name: bat, kind: battery, port: {bat_port}, capacity_kwh: 10, max_charge_kw: 5,
     max_discharge_kw: 5, setpoint_timeout_s: 30}}
  - {{name: gen, kind: generator, port: {gen_port}, min_kw: 1, max_kw: 6, ramp_kw_per_s: 2,
     setpoint_timeout_s: 30}}
  - name: heat
    kind: flexible_load
    transport: modbus-rtu
    unit_id: 3
    serial: {{port: {load_tty}}}
    simulator: {{serial_port: {sim_tty}}}
    baseline_profile: [[0, 4.0]]
    curtailable_share: 0.5
    max_kw: 6
    setpoint_timeout_s: 30
  - name: plug
    kind: flexible_load
    transport: mqtt
    control: relay
    # A 12-s window: short minimum times, or the relay could not shed in it at all.
    relay_min_on_s: 1
    relay_min_off_s: 1
    baseline_profile: [[0, 2.0]]
    curtailable_share: 1.0
    max_kw: 3
    setpoint_timeout_s: 30
    mqtt_device: {{state_topic: plugs/plug/state, command_topic: plugs/plug/set,
                  stale_after_s: 5}}
"""


async def scenario(tmp_path: Path, broker: PrivateBroker) -> dict[str, Any]:
    with NullModem() as line:
        site_file = write_site_file(
            tmp_path,
            SITE.format(
                period=PERIOD,
                mqtt_port=broker.port,
                bat_port=free_port(),
                gen_port=free_port(),
                load_tty=line.a,
                sim_tty=line.b,
            ),
        )
        site = load_site(site_file)
        modbus = [d for d in site.config.devices if d.transport != "mqtt"]
        sim = await serve_site(
            site.__class__(site.path, site.config.model_copy(update={"devices": modbus}), site.maps)
        )
        plugs = await serve_mqtt_devices(site.config, publish_interval_s=0.25)
        try:
            async with offline_control(
                site, tmp_path / "log.sqlite", mqtt=site.config.mqtt
            ) as control:
                for device in control.devices.values():
                    await device.connect()
                for _ in range(4):
                    await control.tick()
                    await asyncio.sleep(PERIOD)
                now = time.time()
                # 5 kWh/h = 5 kW on average: battery 2, generator 1, load 1 (of 2
                # curtailable) and the plug 1 (of its 2: relay, so it is shed on and off).
                shares = (("bat", 0.4), ("gen", 0.2), ("heat", 0.2), ("plug", 0.2))
                energy = 5.0 * WINDOW_S / 3600
                control.add(
                    Commitment(
                        "c1",
                        "c1",
                        RefType.BALANCING_CONTROL,
                        now,
                        now + WINDOW_S,
                        energy,
                        energy,
                        shares,
                    )
                )
                end = now + WINDOW_S
                while time.time() < end + 2 * PERIOD:
                    await control.tick()
                    await asyncio.sleep(max(0.0, min(PERIOD, end - time.time())) or PERIOD)
                await control.tick()
                fresh = {n: control.is_fresh(n, time.time()) for n in control.devices}
        finally:
            await plugs.stop()
            await sim.stop()
    db = sqlite3.connect(tmp_path / "log.sqlite")
    setpoints = db.execute("SELECT asset, p_kw, allocations FROM setpoints").fetchall()
    report = db.execute("SELECT payload FROM reports").fetchall()
    return {
        "setpoints": setpoints,
        "report": json.loads(report[0][0]) if report else None,
        "fresh": fresh,
        "energy": energy,
    }


def test_every_kind_is_driven_within_its_limits(tmp_path: Path, broker: PrivateBroker) -> None:
    seen = run(scenario(tmp_path, broker))
    assert all(seen["fresh"].values()), seen["fresh"]
    by_asset: dict[str, list[float | None]] = {}
    for asset, p_kw, _ in seen["setpoints"]:
        by_asset.setdefault(asset, []).append(p_kw)
    assert set(by_asset) == {"bat", "gen", "heat", "plug"}
    assert all(p is not None and -5 <= p <= 5 for p in by_asset["bat"])
    assert all(p is not None and (p == 0 or 1 <= p <= 6) for p in by_asset["gen"])
    # Loads: released (None) or capped no lower than their firm part.
    assert all(p is None or -4 <= p <= -2 for p in by_asset["heat"])
    assert all(p is None or p == 0.0 for p in by_asset["plug"])
    assert any(p is not None for p in by_asset["heat"])  # it was really curtailed
    assert any(p is not None for p in by_asset["plug"])  # and the plug shed
    report = seen["report"]
    assert report is not None and report["commitment_id"] == "c1"
    delivered = {a["asset"]: a["delivered_kwh"] for a in report["assets"]}
    assert all(kwh > 0 for kwh in delivered.values()), delivered
    # Ramp, relay steps and 1-s MQTT telemetry make this coarser than a battery alone.
    assert abs(report["delivered_kwh"] - seen["energy"]) <= 0.1 * seen["energy"], report
