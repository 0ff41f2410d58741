"""The Modbus RTU driver against the serial simulator, over a pty pair joined like a null modem.

The simulator opens one end of the line (simulator.serial_port), the driver the other
(serial.port). Each test body runs with tests.support.harness.run; the simulator gets a fake
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.cli.sim import run_sim
from flexedge.config.loader import Site, load_site
from flexedge.config.schema import SerialSettings
from flexedge.drivers.factory import build_device
from flexedge.drivers.modbus_rtu import ModbusRtuDevice
from flexedge.errors import ConfigError, DeviceUnavailable
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.modbus_server import SiteSimulator, serve_site
from tests.support.harness import FakeClock, run, wait_for_async, write_site_file
from tests.support.pty_pair import NullModem

TIMEOUT_S = 0.3


def battery(name: str, unit_id: int, soc: float, line: NullModem) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "modbus-rtu",
        "unit_id": unit_id,
        "serial": {"port": line.b, "baudrate": 19200},
        "timeout_s": TIMEOUT_S,
        "capacity_kwh": 10,
        "max_charge_kw": 4,
        "max_discharge_kw": 5,
        "charge_efficiency": 0.9,
        "simulator": {"initial_soc": soc, "serial_port": line.a},
    }


def write_site(tmp_path: Path, devices: list[dict[str, Any]]) -> Path:
    return write_site_file(tmp_path, {"site": "rtu-site", "devices": devices})


@pytest.fixture
def line() -> Iterator[NullModem]:
    with NullModem() as pair:
        yield pair


@pytest.fixture
def site(tmp_path: Path, line: NullModem) -> Site:
    return load_site(
        write_site(tmp_path, [battery("b1", 1, 0.3, line), battery("b2", 2, 0.7, line)])
    )


def driver(site: Site, name: str) -> ModbusRtuDevice:
    return ModbusRtuDevice.from_config(site.config.device(name), site.maps[name])


@contextlib.asynccontextmanager
async def served(site: Site, clock: FakeClock) -> AsyncIterator[SiteSimulator]:
    sim = await serve_site(site, clock=clock)
    try:
        yield sim
    finally:
        await sim.stop()


def test_read_and_setpoint_follow_the_model(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as sim:
            device = driver(site, "b1")
            try:
                reading = await device.read()
                assert reading.soc == pytest.approx(0.3, abs=1e-4)
                assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
                await device.write_setpoint(-2.0)
                model = sim.model("b1", BatteryModel)
                assert (model.setpoint_kw, model.p_kw) == (-2.0, -2.0)
                clock.now += 8.0  # within the 10 s lease: 2 kW x 0.9 for 8 s into 10 kWh
                reading = await device.read()
                assert (reading.p_kw, reading.setpoint_kw) == (-2.0, -2.0)
                assert reading.soc == pytest.approx(0.3 + 2.0 * 0.9 * 8 / 3600 / 10, abs=1e-4)
                await device.write_point("setpoint_timeout", 5)
                assert model.timeout_s == 5.0
            finally:
                await device.close()

    run(body())


def test_two_units_on_one_bus_concurrently(site: Site) -> None:
    """Interleaved calls from two devices on one port: every answer is the asker's."""

    async def body() -> None:
        async with served(site, FakeClock()) as sim:
            d1, d2 = driver(site, "b1"), driver(site, "b2")
            assert d1.bus is d2.bus  # one port, one client, one lock
            try:
                calls = []
                for step in range(10):
                    calls += [
                        d1.read(),
                        d2.read(),
                        d1.write_setpoint(-0.5 - step / 10),
                        d2.write_setpoint(1.0 + step / 10),
                    ]
                results = await asyncio.gather(*calls)
                readings = [r for r in results if r is not None]
                assert len(readings) == 20
                for reading in readings:
                    expected = {"b1": 0.3, "b2": 0.7}[reading.asset]
                    assert reading.soc == pytest.approx(expected, abs=1e-4)
                assert sim.model("b1", BatteryModel).setpoint_kw == pytest.approx(-1.4)
                assert sim.model("b2", BatteryModel).setpoint_kw == pytest.approx(1.9)
                r1, r2 = await asyncio.gather(d1.read(), d2.read())
                assert r1.setpoint_kw == pytest.approx(-1.4)
                assert r2.setpoint_kw == pytest.approx(1.9)
            finally:
                await d1.close()
                await d2.close()
            assert not d1.bus.client.connected  # the last device out closes the port

    run(body())


def test_missing_unit_is_unavailable_within_timeout(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()):
            present = driver(site, "b1")
            serial = site.config.device("b1").serial
            assert serial is not None
            missing = ModbusRtuDevice("b9", serial, 9, TIMEOUT_S, site.maps["b1"])
            try:
                await present.read()
                started = time.monotonic()
                with pytest.raises(DeviceUnavailable, match="b9"):
                    await missing.read()
                # At least the timeout; the upper bound is loose (a loaded machine is slow)
                # and only says the call gave up instead of hanging.
                assert TIMEOUT_S * 0.9 <= time.monotonic() - started < TIMEOUT_S + 5.0
                # Nobody answering one unit does not take the bus down for the others, even
                # for a request queued behind the silent one.
                lost, reading = await asyncio.gather(
                    missing.read(), present.read(), return_exceptions=True
                )
                assert isinstance(lost, DeviceUnavailable)
                assert not isinstance(reading, BaseException)
                assert reading.soc == pytest.approx(0.3, abs=1e-4)
            finally:
                await missing.close()
                await present.close()

    run(body())


def test_port_that_does_not_exist_is_unavailable(tmp_path: Path, site: Site) -> None:
    async def body() -> None:
        serial = SerialSettings(port=str(tmp_path / "no-such-tty"))
        device = ModbusRtuDevice("b1", serial, 1, TIMEOUT_S, site.maps["b1"])
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await device.read()
        await device.close()
        await device.close()  # twice is fine

    run(body())


def test_one_port_one_set_of_line_settings(site: Site) -> None:
    async def body() -> None:
        serial = site.config.device("b1").serial
        assert serial is not None
        first = ModbusRtuDevice("b1", serial, 1, TIMEOUT_S, site.maps["b1"])
        try:
            with pytest.raises(ConfigError, match="line settings 9600 8N1 differ"):
                ModbusRtuDevice(
                    "b2",
                    serial.model_copy(update={"baudrate": 9600}),
                    2,
                    TIMEOUT_S,
                    site.maps["b1"],
                )
        finally:
            await first.close()

    run(body())


def test_factory_and_run_sim_serve_rtu(
    tmp_path: Path, line: NullModem, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flexedge.cli.sim")
    path = write_site(tmp_path, [battery("b1", 1, 0.3, line)])
    site = load_site(path)

    async def body() -> None:
        stop = asyncio.Event()
        started: list[SiteSimulator] = []
        task = asyncio.create_task(run_sim(path, stop=stop, on_started=started.append))
        await wait_for_async(lambda: started, 5, "run_sim to start")
        assert f"simulating b1 on {line.a}" in caplog.text
        device = build_device(site.config.device("b1"), site.maps["b1"])
        assert isinstance(device, ModbusRtuDevice)
        assert (await device.read()).soc == pytest.approx(0.3, abs=1e-4)
        await device.close()
        stop.set()
        await task

    run(body())


# -- config --------------------------------------------------------------------------------

RTU = {
    "name": "b1",
    "transport": "modbus-rtu",
    "serial": {"port": "/dev/ttyUSB0"},
    "capacity_kwh": 10,
    "max_charge_kw": 4,
    "max_discharge_kw": 5,
}


def test_serial_section_defaults(tmp_path: Path) -> None:
    path = write_site_file(
        tmp_path,
        """\
site: s
devices:
  - {name: b1, transport: modbus-rtu, serial: {port: /dev/ttyUSB0, parity: E},
     capacity_kwh: 10, max_charge_kw: 4, max_discharge_kw: 5}
""",
    )
    serial = load_site(path).config.device("b1").serial
    assert serial == SerialSettings(
        port="/dev/ttyUSB0", baudrate=9600, bytesize=8, parity="E", stopbits=1
    )  # unquoted E is a string


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"serial": None}, "devices[0] (b1)", "modbus-rtu needs a serial section"),
        ({"transport": "modbus-tcp"}, "devices[0] (b1)", "serial is only for transport modbus-rtu"),
        (
            {"serial": {"port": "/dev/ttyUSB0", "parity": "X"}},
            "devices[0] (b1).serial.parity",
            "'N', 'E' or 'O'",
        ),
        (
            {"serial": {"port": "/dev/ttyUSB0", "stopbits": 3}},
            "devices[0] (b1).serial.stopbits",
            "1 or 2",
        ),
        (
            {"serial": {"port": "/dev/ttyUSB0", "bytesize": 7}},
            "devices[0] (b1).serial.bytesize",
            "8",
        ),
        (
            {"serial": {"port": "/dev/ttyUSB0", "flow": "rts"}},
            "devices[0] (b1).serial.flow",
            "Extra inputs",
        ),
        ({"serial": {"baudrate": 9600}}, "devices[0] (b1).serial.port", "Field required"),
        ({"host": "10.0.0.5"}, "devices[0] (b1)", "host and port are for modbus-tcp"),
        ({"unit_id": 0}, "devices[0] (b1)", "unit_id 0 is the broadcast address"),
    ],
)
def test_serial_config_errors(
    tmp_path: Path, change: dict[str, Any], field: str, problem: str
) -> None:
    device = {**RTU, **change}
    if device["serial"] is None:
        del device["serial"]
    with pytest.raises(ConfigError) as caught:
        load_site(write_site(tmp_path, [device]))
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_simulator_serial_port_is_rtu_only(tmp_path: Path) -> None:
    tcp = {**RTU, "transport": "modbus-tcp", "simulator": {"serial_port": "/dev/pts/9"}}
    del tcp["serial"]
    with pytest.raises(ConfigError, match=r"simulator\.serial_port is only for"):
        load_site(write_site(tmp_path, [tcp]))


@pytest.mark.parametrize(
    ("second", "field", "problem"),
    [
        ({"unit_id": 1}, "devices[1] (b2).unit_id", "unit 1 is used twice on /dev/ttyUSB0"),
        (
            {"serial": {"port": "/dev/ttyUSB0", "baudrate": 19200}},
            "devices[1] (b2).serial",
            "line settings differ from 'b1'",
        ),
        (
            {"simulator": {"serial_port": "/dev/pts/7"}},
            "devices[1] (b2).simulator.serial_port",
            "differs from 'b1'",
        ),
    ],
)
def test_devices_sharing_a_port(
    tmp_path: Path, second: dict[str, Any], field: str, problem: str
) -> None:
    devices = [{**RTU, "unit_id": 1}, {**RTU, "name": "b2", "unit_id": 2, **second}]
    with pytest.raises(ConfigError) as caught:
        load_site(write_site(tmp_path, devices))
    assert caught.value.field == field
    assert problem in caught.value.problem
