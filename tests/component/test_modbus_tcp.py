"""The Modbus TCP driver against the in-process simulator, over real sockets on 127.0.0.1.

No pytest-asyncio: each test runs its async body with tests.support.harness.run. The simulator
gets a fake clock so physics and lease timing are exact and the tests never sleep for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flexedge.cli.sim import run_sim
from flexedge.config.loader import Site, load_site
from flexedge.config.registermap import WIDTH, DataType, Point, decode, encode
from flexedge.drivers.base import Device
from flexedge.drivers.modbus_tcp import ModbusTcpDevice, ReadBlock, plan_reads
from flexedge.errors import DeviceProtocolError, DeviceUnavailable
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.modbus_server import SiteSimulator, serve_site
from tests.support.harness import FakeClock, run, wait_for_async, write_site_file

SITE = """\
site: test-site
devices:
  - name: b1
    host: 127.0.0.1
    port: 5020
    unit_id: 3
    timeout_s: 0.5
    register_map: {register_map}
    capacity_kwh: 10
    soc_min: 0.1
    soc_max: 0.9
    max_charge_kw: 4
    max_discharge_kw: 5
    charge_efficiency: 0.9
    discharge_efficiency: 0.8
    setpoint_timeout_s: 10
    simulator: {{initial_soc: 0.6}}
"""

# SunSpec-like: W with a shared scale-factor point, two-word little-endian integers, charging
# counted positive by the device (sign -1), SoC as a float fraction, all in holding registers.
SUNSPEC_MAP = """\
model: sunspec-like
kind: battery
points:
  w_sf: {address: 40, type: s16, unit: count}
  power: {address: 41, type: s32, word_order: little, scale_factor_point: w_sf,
          unit: W, sign: -1}
  soc: {address: 43, type: f32, unit: fraction}
  power_setpoint: {address: 45, type: s32, word_order: little, scale_factor_point: w_sf,
                   unit: W, sign: -1, access: rw}
  setpoint_timeout: {address: 60, type: u32, unit: s, access: rw}
"""


def write_site(tmp_path: Path, map_text: str | None = None) -> Path:
    register_map = "battery_generic"
    if map_text is not None:
        (tmp_path / "custom.yaml").write_text(map_text, encoding="utf-8")
        register_map = "custom.yaml"
    return write_site_file(tmp_path, SITE.format(register_map=register_map))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return load_site(write_site(tmp_path))


def driver_for(site: Site, sim: SiteSimulator) -> ModbusTcpDevice:
    host, port = sim.address("b1")
    return ModbusTcpDevice.from_config(
        site.config.device("b1"), site.maps["b1"], host=host, port=port
    )


@contextlib.asynccontextmanager
async def served(
    site: Site, clock: FakeClock
) -> AsyncIterator[tuple[SiteSimulator, ModbusTcpDevice]]:
    sim = await serve_site(site, port=0, clock=clock)
    device = driver_for(site, sim)
    try:
        await device.connect()
        yield sim, device
    finally:
        await device.close()
        await sim.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_read_plan_groups_contiguous_points_per_table(site: Site) -> None:
    assert plan_reads(site.maps["b1"].spec) == (
        ReadBlock("holding", 10, 4, ("power_setpoint", "setpoint_timeout", "heartbeat")),
        ReadBlock("input", 0, 7, ("power", "soc", "max_charge_power", "max_discharge_power")),
    )


def test_read_returns_initial_state(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (_, device):
            as_device: Device = device  # the driver satisfies the controller's protocol
            before = time.time()
            reading = await as_device.read()
            assert reading.asset == "b1"
            assert reading.soc == pytest.approx(0.6, abs=1e-4)
            assert (reading.p_kw, reading.setpoint_kw, reading.available) == (0.0, 0.0, True)
            assert before <= reading.ts <= time.time()
            points = await device.read_points()
            assert (points["max_charge_power"], points["max_discharge_power"]) == (4.0, 5.0)
            assert points["setpoint_timeout"] == 10.0

    run(body())


def test_setpoint_reaches_model_and_reads_back(site: Site) -> None:
    clock = FakeClock()
    writes: list[tuple[str, str, float, float]] = []

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            sim.on_write = lambda *args: writes.append(args)
            before = time.perf_counter()
            await device.write_setpoint(-2.5)
            after = time.perf_counter()
            model = sim.model("b1", BatteryModel)
            assert (model.setpoint_kw, model.p_kw) == (-2.5, -2.5)
            assert [w[:3] for w in writes] == [("b1", "power_setpoint", -2.5)]
            assert before <= writes[0][3] <= after
            clock.now += 6.0  # within the 10 s lease: 2.5 kW x 0.9 for 6 s into 10 kWh
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (-2.5, -2.5)
            assert reading.soc == pytest.approx(0.6 + 2.5 * 0.9 * 6 / 3600 / 10, abs=1e-4)
            assert model.soc == pytest.approx(0.6 + 2.5 * 0.9 * 6 / 3600 / 10, abs=1e-12)

    run(body())


def test_out_of_rating_setpoints_are_accepted_and_clipped(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, device):
            await device.write_setpoint(8.0)
            reading = await device.read()
            assert (reading.setpoint_kw, reading.p_kw) == (8.0, 5.0)
            await device.write_setpoint(-9.0)
            reading = await device.read()
            assert (reading.setpoint_kw, reading.p_kw) == (-9.0, -4.0)
            assert sim.model("b1").p_kw == -4.0
            with pytest.raises(ValueError, match="does not fit"):
                # Beyond s32 at 0.01 kW (21.47 GW): the caller's bug.
                await device.write_setpoint(3e7)

    run(body())


def test_lease_reverts_setpoint_after_timeout(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            assert await device.configure_lease(2) is True
            assert sim.model("b1").timeout_s == 2.0
            await device.write_setpoint(3.0)
            clock.now += 1.9
            assert (await device.read()).p_kw == 3.0
            clock.now += 0.2
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
            # Discharged for exactly the 2 s lease.
            assert sim.model("b1", BatteryModel).discharged_kwh == pytest.approx(3.0 * 2.0 / 3600)

    run(body())


def test_invalid_lease_is_refused_as_protocol_error(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, device):
            with pytest.raises(DeviceProtocolError, match="exception code 3"):
                await device.configure_lease(0)
            assert sim.model("b1").timeout_s == 10.0
            assert (await device.read()).soc is not None  # the connection survives it

    run(body())


def test_stopped_server_is_unavailable_and_reconnect_follows(site: Site) -> None:
    async def body() -> None:
        async with served(site, FakeClock()) as (sim, device):
            await device.read()
            await sim.stop()
            await wait_for_async(
                lambda: not device._client.connected, 5, "the driver to see the server close"
            )
            with pytest.raises(DeviceUnavailable):
                await device.read()
            with pytest.raises(DeviceUnavailable):
                await device.write_setpoint(1.0)
            await sim.start()  # same port as before
            assert (await device.read()).soc == pytest.approx(0.6, abs=1e-4)

    run(body())


def test_nothing_listening_is_unavailable(site: Site) -> None:
    async def body() -> None:
        device = ModbusTcpDevice("b1", "127.0.0.1", free_port(), 1, 0.5, site.maps["b1"])
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await device.connect()
        with pytest.raises(DeviceUnavailable):
            await device.read()
        await device.close()
        await device.close()  # twice is fine

    run(body())


def test_silent_device_times_out_as_unavailable(site: Site) -> None:
    """A peer that accepts but never answers costs one timeout_s per call, then reconnects."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()  # never answer

    async def body() -> None:
        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        device = ModbusTcpDevice("b1", "127.0.0.1", port, 1, 0.2, site.maps["b1"])
        try:
            for expected_connections in (1, 2):
                started = time.monotonic()
                with pytest.raises(DeviceUnavailable):
                    await device.read()
                # At least the timeout; the upper bound is loose (a loaded machine is slow)
                # and only says the call gave up instead of hanging.
                assert 0.15 <= time.monotonic() - started < 0.2 + 5.0
                assert len(connections) == expected_connections  # dropped and reopened
        finally:
            await device.close()
            for writer in connections:
                writer.close()
            server.close()
            await server.wait_closed()

    run(body())


def test_lease_reverts_on_the_real_clock(site: Site) -> None:
    """The same lease, end to end with time.monotonic (the shortest lease the u16 s holds)."""

    async def body() -> None:
        sim = await serve_site(site, port=0)
        device = driver_for(site, sim)
        try:
            await device.configure_lease(1)
            await device.write_setpoint(-1.0)
            assert (await device.read()).p_kw == -1.0
            await asyncio.sleep(1.1)  # the behaviour under test: the 1-s lease running out
            reading = await device.read()
            assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
        finally:
            await device.close()
            await sim.stop()

    run(body())


def test_scale_factor_points_and_two_word_registers(tmp_path: Path) -> None:
    site = load_site(write_site(tmp_path, SUNSPEC_MAP))
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            assert [(b.address, b.count) for b in device.read_plan] == [(40, 7), (60, 2)]
            points = await device.read_points()
            exponent = points["w_sf"]
            # The simulator picks the finest exponent at which 5 kW still fits an s32 in W.
            assert exponent == -5.0
            assert points["soc"] == pytest.approx(0.6, rel=1e-6)
            await device.write_setpoint(-1.23456)
            assert sim.model("b1", BatteryModel).setpoint_kw == pytest.approx(-1.23456, abs=1e-8)
            reading = await device.read()
            assert reading.p_kw == pytest.approx(-1.23456, abs=1e-8)
            assert await device.configure_lease(70000) is True  # needs the u32
            assert sim.model("b1").timeout_s == 70000.0

    run(body())


def test_run_sim_serves_until_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flexedge.cli.sim")
    path = write_site(tmp_path)
    site = load_site(path)

    async def body() -> None:
        stop = asyncio.Event()
        started: list[SiteSimulator] = []
        task = asyncio.create_task(run_sim(path, port=0, stop=stop, on_started=started.append))
        await wait_for_async(lambda: started, 5, "run_sim to start")
        host, port = started[0].address("b1")
        assert f"simulating b1 on {host}:{port}" in caplog.text
        device = driver_for(site, started[0])
        assert (await device.read()).soc == pytest.approx(0.6, abs=1e-4)
        await device.close()
        stop.set()
        await asyncio.wait_for(task, 5)
        assert not started[0].servers[0].running

    run(body())


points = st.builds(
    Point,
    address=st.just(0),
    type=st.sampled_from(list(DataType)),
    word_order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, 0.5]),
    unit=st.sampled_from(["kW", "W", "%", "fraction", "s", "count"]),
    sign=st.sampled_from([1, -1]),
)


@given(point=points, sf=st.integers(-4, 4), data=st.data())
def test_registers_round_trip_through_site_units(
    point: Point,
    sf: int,
    data: st.DataObject,
) -> None:
    """Whatever a device holds, decode then encode gives the same registers back."""
    width = WIDTH[point.type]
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=width, max_size=width))
    value = decode(point, registers, sf)
    assume(math.isfinite(value))  # NaN payloads need not survive a float round trip
    assert encode(point, value, sf) == registers


@given(point=points, sf=st.integers(-4, 4), fraction=st.floats(0.0, 1.0))
def test_site_values_round_trip_within_resolution(
    point: Point,
    sf: int,
    fraction: float,
) -> None:
    """A value in range comes back within half a register step (or float32 precision)."""
    step = abs(point.scale * 10.0**sf * {"W": 0.001, "%": 0.01}.get(point.unit, 1.0))
    if point.type is DataType.F32:
        value = (fraction - 0.5) * 1e6 * step
        assert decode(point, encode(point, value, sf), sf) == pytest.approx(value, rel=2**-23)
        return
    bits = 16 * WIDTH[point.type]
    low, high = (
        (0, 2**bits - 1)
        if point.type in (DataType.U16, DataType.U32)
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    value = (low + fraction * (high - low)) * step * point.sign
    back = decode(point, encode(point, value, sf), sf)
    # Half a step, plus double-precision noise at raw values near 2**31 exactly on a tie.
    assert abs(back - value) <= step / 2 * (1 + 1e-9) + abs(value) * 1e-15
