"""Every device kind (battery, continuous load, relay load, generator) through the Modbus
driver against the simulator, on both transports: TCP over real sockets on 127.0.0.1, RTU over
a pty pair joined like a null modem (tests/pty_pair.py), all four devices as units of one bus.

One site file holds all kinds; SiteSimulator.from_site serves it. The simulator gets a fake
clock so ramps, rebound and leases move only when a test says so.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.config.loader import Site, load_site
from flexedge.config.registermap import DataType, Point, decode, encode
from flexedge.config.schema import Battery, FlexibleLoad, Generator
from flexedge.drivers.modbus_rtu import ModbusRtuDevice
from flexedge.drivers.modbus_tcp import ModbusDevice, ModbusTcpDevice
from flexedge.errors import DeviceProtocolError
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.modbus_server import SiteSimulator
from flexedge.simulators.devices.sim_device import (
    SimulatedBattery,
    SimulatedDevice,
    encode_saturating,
)
from tests.support.harness import FakeClock, run, write_site_file
from tests.support.pty_pair import NullModem

NAMES = ("bat", "load", "relay", "gen", "ev")


def device_specs() -> list[dict[str, Any]]:
    """One device of each kind (and both load controls), transport-neutral."""
    return [
        {
            "name": "bat",
            "unit_id": 1,
            "capacity_kwh": 10,
            "max_charge_kw": 4,
            "max_discharge_kw": 5,
            "charge_efficiency": 1.0,
            "discharge_efficiency": 1.0,
            "simulator": {"initial_soc": 0.5},
        },
        # 4 kW flat, half of it curtailable: the firm part is 2 kW.
        {
            "name": "load",
            "kind": "flexible_load",
            "unit_id": 2,
            "baseline_profile": [[0, 4.0]],
            "curtailable_share": 0.5,
            "max_kw": 6,
        },
        # 3 kW flat behind a relay; 1.2 kW of it (40 %) stays on when shed.
        {
            "name": "relay",
            "kind": "flexible_load",
            "unit_id": 3,
            "control": "relay",
            "register_map": "flexible_load_relay",
            "baseline_profile": [[0, 3.0]],
            "curtailable_share": 0.6,
            "max_kw": 4,
        },
        {
            "name": "gen",
            "kind": "generator",
            "unit_id": 4,
            "min_kw": 2,
            "max_kw": 10,
            "ramp_kw_per_s": 0.5,
            "setpoint_timeout_s": 60,
        },
        # 3 kW flat with a consumption setpoint: down to 1.5 kW, or up to 2 kW more until its
        # buffer has taken 0.01 kWh (18 s at 2 kW more).
        {
            "name": "ev",
            "kind": "flexible_load",
            "unit_id": 5,
            "control": "setpoint",
            "baseline_profile": [[0, 3.0]],
            "curtailable_share": 0.5,
            "max_kw": 11,
            "max_extra_kw": 2.0,
            "extra_buffer_kwh": 0.01,
            "setpoint_timeout_s": 600,
        },
    ]


@pytest.fixture(params=["modbus-tcp", "modbus-rtu"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    devices = device_specs()
    with contextlib.ExitStack() as stack:
        if request.param == "modbus-rtu":
            line = stack.enter_context(NullModem())
            for device in devices:
                device.update(
                    transport="modbus-rtu",
                    timeout_s=0.5,
                    serial={"port": line.b, "baudrate": 38400},
                )
                device.setdefault("simulator", {})["serial_port"] = line.a
        else:
            for device in devices:
                device["timeout_s"] = 0.5
        yield load_site(write_site_file(tmp_path, {"site": "kinds", "devices": devices}))


def driver(site: Site, sim: SiteSimulator, name: str) -> ModbusDevice:
    config = site.config.device(name)
    if config.transport == "modbus-rtu":
        return ModbusRtuDevice.from_config(config, site.maps[name])
    host, port = sim.address(name)
    return ModbusTcpDevice.from_config(config, site.maps[name], host=host, port=port)


@contextlib.asynccontextmanager
async def served(
    site: Site,
    clock: FakeClock,
) -> AsyncIterator[tuple[SiteSimulator, dict[str, ModbusDevice]]]:
    # port=0 gives each TCP device a free port; RTU devices are on their serial line.
    sim = SiteSimulator.from_site(site, port=0, clock=clock)
    await sim.start()
    drivers: dict[str, ModbusDevice] = {}
    try:
        drivers = {name: driver(site, sim, name) for name in NAMES}
        yield sim, drivers
    finally:
        for device in drivers.values():
            await device.close()
        await sim.stop()


def test_site_with_every_kind_loads_and_is_served(site: Site) -> None:
    kinds = {d.name: type(d) for d in site.config.devices}
    assert kinds == {
        "bat": Battery,
        "load": FlexibleLoad,
        "relay": FlexibleLoad,
        "gen": Generator,
        "ev": FlexibleLoad,
    }
    assert site.maps["ev"].has("power_setpoint") and site.maps["ev"].has("setpoint_enable")
    assert site.maps["load"].has("power_limit") and site.maps["relay"].has("relay")

    async def body() -> None:
        async with served(site, FakeClock()) as (sim, drivers):
            assert {n: type(m) for n, m in sim.models.items()} == {
                "bat": BatteryModel,
                "load": LoadModel,
                "relay": LoadModel,
                "gen": GeneratorModel,
                "ev": LoadModel,
            }
            with pytest.raises(TypeError, match="gen is simulated by a GeneratorModel"):
                sim.model("gen", LoadModel)
            readings = {n: await d.read() for n, d in drivers.items()}
            assert readings["bat"].soc == pytest.approx(0.5, abs=1e-4)
            assert readings["bat"].setpoint_kw == 0.0
            assert (readings["load"].p_kw, readings["load"].soc) == (-4.0, None)
            assert (readings["relay"].p_kw, readings["relay"].soc) == (-3.0, None)
            assert (readings["gen"].p_kw, readings["gen"].soc) == (0.0, None)
            # Loads have no setpoint to read back; generators do.
            assert readings["load"].setpoint_kw is None
            assert readings["relay"].setpoint_kw is None
            assert readings["gen"].setpoint_kw == 0.0
            assert (await drivers["load"].read_points())["power_limit"] == 6.0  # no limit
            assert (await drivers["relay"].read_points())["relay"] == 1.0
            assert (await drivers["gen"].read_points())["running"] == 0.0

    run(body())


def test_battery_follows_setpoint(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, drivers):
            bat, model = drivers["bat"], sim.model("bat", BatteryModel)
            await bat.write_setpoint(-3.6)
            assert (model.setpoint_kw, model.p_kw) == (-3.6, -3.6)
            clock.now += 5.0  # 3.6 kW for 5 s into 10 kWh at 100 %: +0.05 % SoC
            reading = await bat.read()
            assert (reading.p_kw, reading.setpoint_kw) == (-3.6, -3.6)
            assert reading.soc == pytest.approx(0.5 + 3.6 * 5 / 3600 / 10, abs=1e-4)
            with pytest.raises(ValueError, match="needs a setpoint"):
                await bat.write_setpoint(None)
            assert model.setpoint_kw == -3.6  # nothing was written

    run(body())


def test_continuous_load_cap_firm_part_and_release(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, drivers):
            load, model = drivers["load"], sim.model("load", LoadModel)
            await load.write_setpoint(-3.0)  # cap consumption at 3 kW
            assert model.limit_kw == 3.0
            clock.now += 2.0
            assert (await load.read()).p_kw == pytest.approx(-3.0)
            assert (await load.read_points())["power_limit"] == 3.0
            # A cap below the firm part (and a positive p_kw, a cap of 0) never sheds it.
            for p_kw in (-0.5, 1.0):
                await load.write_setpoint(p_kw)
                assert (await load.read()).p_kw == pytest.approx(-2.0)
            assert model.limit_kw == 0.0
            # Release: the rating is written, the model has no cap, full demand returns.
            await load.write_setpoint(None)
            assert model.limit_kw is None
            points = await load.read_points()
            assert (points["power"], points["power_limit"]) == (-4.0, 6.0)
            # The controller confirms a load's writes by the heartbeat.
            assert await load.write_heartbeat(70000) is True
            assert (await load.read()).heartbeat == 70000 % 65536

    run(body())


def test_setpoint_load_draws_less_or_more_until_its_buffer_is_full(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, drivers):
            ev, model = drivers["ev"], sim.model("ev", LoadModel)
            assert (await ev.read()).p_kw == pytest.approx(-3.0)
            await ev.write_setpoint(-2.0)  # draw 1 kW less
            points = await ev.read_points()
            assert (points["power"], points["power_setpoint"], points["setpoint_enable"]) == (
                -2.0,
                -2.0,
                1.0,
            )
            await ev.write_setpoint(-4.5)  # draw 1.5 kW more
            assert (await ev.read()).p_kw == pytest.approx(-4.5)
            assert (await ev.read()).setpoint_kw is None  # confirmed by heartbeat, as loads
            await ev.write_setpoint(-9.0)  # beyond what it can draw more: 2 kW more at most
            assert (await ev.read()).p_kw == pytest.approx(-5.0)
            clock.now += 20.0  # 2 kW more fills its 0.01 kWh buffer in 18 s
            assert (await ev.read()).p_kw == pytest.approx(-3.0)  # full: its demand only
            assert model.stored_extra_kwh == pytest.approx(0.01)
            await ev.write_setpoint(None)  # release: its own demand, giving the store back
            points = await ev.read_points()
            assert points["setpoint_enable"] == 0.0
            assert -3.0 < points["power"] <= -1.5

    run(body())


def test_relay_load_sheds_and_switches_back_on(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, drivers):
            relay, model = drivers["relay"], sim.model("relay", LoadModel)
            await relay.write_setpoint(-2.9)  # any cap opens the relay, even one above firm
            assert model.limit_kw == 0.0
            points = await relay.read_points()
            assert points["relay"] == 0.0
            assert points["power"] == pytest.approx(-1.2)  # firm 40 % of 3 kW stays on
            await relay.write_setpoint(None)
            points = await relay.read_points()
            assert (points["relay"], points["power"]) == (1.0, -3.0)
            # Only on (1) and shed (0) are relay positions.
            with pytest.raises(DeviceProtocolError, match="exception code 3"):
                await relay.write_point("relay", 2)
            assert model.limit_kw is None

    run(body())


def test_generator_ramps_to_setpoint_and_stops_below_min(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, drivers):
            gen, model = drivers["gen"], sim.model("gen", GeneratorModel)
            await gen.write_setpoint(6.0)
            clock.now += 4.0  # 0.5 kW/s from standstill
            reading = await gen.read()
            assert reading.p_kw == pytest.approx(2.0)
            assert reading.setpoint_kw == pytest.approx(6.0)
            assert (await gen.read_points())["running"] == 1.0
            clock.now += 20.0
            assert (await gen.read()).p_kw == pytest.approx(6.0)
            await gen.write_setpoint(1.5)  # below min_kw 2: ramp down and stop
            clock.now += 4.0
            points = await gen.read_points()
            assert points["power"] == pytest.approx(4.0)
            assert points["running"] == 1.0
            assert points["power_setpoint"] == pytest.approx(1.5)  # shown as written
            clock.now += 10.0
            points = await gen.read_points()
            assert (points["power"], points["running"]) == (0.0, 0.0)
            assert not model.running
            await gen.write_setpoint(25.0)  # beyond max_kw: accepted, clipped by the machine
            clock.now += 30.0
            assert (await gen.read()).p_kw == pytest.approx(10.0)

    run(body())


def test_lease_brings_every_kind_back_to_its_safe_state(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, drivers):
            for device in drivers.values():
                assert await device.configure_lease(5) is True
            assert {m.timeout_s for m in sim.models.values()} == {5.0}
            commands = {"bat": 3.0, "load": -1.0, "relay": -1.0, "gen": 4.0, "ev": -2.0}
            for name, p_kw in commands.items():
                await drivers[name].write_setpoint(p_kw)
            clock.now += 4.8  # within the lease every command holds
            held = {n: (await d.read()).p_kw for n, d in drivers.items()}
            assert held == {
                "bat": 3.0,
                "load": pytest.approx(-2.0),
                "relay": pytest.approx(-1.2),
                "gen": pytest.approx(2.4),
                "ev": pytest.approx(-2.0),
            }
            clock.now += 0.3  # lease over: battery 0, loads released, generator heads to 0
            readings = {n: await d.read() for n, d in drivers.items()}
            assert (readings["bat"].p_kw, readings["bat"].setpoint_kw) == (0.0, 0.0)
            assert readings["load"].p_kw == pytest.approx(-4.0)
            assert readings["relay"].p_kw == pytest.approx(-3.0)
            assert readings["ev"].p_kw == pytest.approx(-3.0)
            assert (await drivers["ev"].read_points())["setpoint_enable"] == 0.0
            assert readings["gen"].setpoint_kw == 0.0
            assert (await drivers["load"].read_points())["power_limit"] == 6.0
            assert (await drivers["relay"].read_points())["relay"] == 1.0
            clock.now += 5.0  # the generator ramps down from 2.5 kW at 0.5 kW/s and stops
            points = await drivers["gen"].read_points()
            assert (points["power"], points["running"]) == (0.0, 0.0)
            assert (
                sim.model("load", LoadModel).limit_kw,
                sim.model("relay", LoadModel).limit_kw,
            ) == (None, None)

    run(body())


def test_driver_refuses_commands_it_cannot_express(site: Site) -> None:
    """Checked before any I/O: nothing is listening here."""

    async def body() -> None:
        load = ModbusTcpDevice("load", "127.0.0.1", 1, 2, 0.5, site.maps["load"])
        try:
            assert (load.control, load.release_limit_kw) == ("power_limit", None)
            with pytest.raises(ValueError, match="no release_limit_kw"):
                await load.write_setpoint(None)  # built without the load's rating
            with pytest.raises(ValueError, match="NaN"):
                await load.write_setpoint(math.nan)
        finally:
            await load.close()
        relay = ModbusTcpDevice("relay", "127.0.0.1", 1, 3, 0.5, site.maps["relay"])
        assert relay.control == "relay"
        await relay.close()

    run(body())


def test_simulated_battery_still_takes_a_bare_battery_model(site: Site) -> None:
    config = site.config.device("bat")
    assert isinstance(config, Battery)
    model = BatteryModel.from_config(config)
    served = SimulatedBattery("bat", model, site.maps["bat"])
    assert served.model is model
    assert SimulatedBattery is SimulatedDevice


@pytest.mark.parametrize(
    ("point", "value", "shown"),
    [
        # A load drawing 70 kW on a u16 W register with sign -1 (consumption negative).
        (Point(address=0, type=DataType.U16, unit="W", sign=-1), -70.0, -65.535),
        (Point(address=0, type=DataType.S16, unit="kW", scale=0.01), 400.0, 327.67),
        (Point(address=0, type=DataType.S16, unit="kW", scale=0.01), -400.0, -327.68),
        (Point(address=0, type=DataType.S32, unit="W", word_order="little"), -3e6, -2147483.648),
    ],
)
def test_out_of_range_values_saturate(point: Point, value: float, shown: float) -> None:
    """Physics beyond the register's range (a noisy load above its rating) shows the nearest
    end of the range instead of failing every read."""
    assert decode(point, encode_saturating(point, value)) == pytest.approx(shown)
    assert encode_saturating(point, shown / 2) == encode(point, shown / 2)  # in range
