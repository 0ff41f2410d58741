"""Simulator fault injection, seen through the Modbus TCP driver over real sockets.

No pytest-asyncio: each test runs its async body with tests.support.harness.run. Device
tests give the simulator a fake clock, so physics moves only when a test says so; the MQTT
tests use the session broker and the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes

from flexedge.cli.main import build_parser
from flexedge.cli.sim import run_sim
from flexedge.config.loader import Site, load_site
from flexedge.drivers.modbus_tcp import ModbusTcpDevice
from flexedge.errors import DeviceProtocolError, DeviceUnavailable
from flexedge.mqtt import Broker, MqttLink
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.fault_client import fault_message, send_fault
from flexedge.simulators.devices.faults import (
    DeviceFaults,
    FaultError,
    FaultState,
    command_topic,
    state_topic,
    updated,
)
from flexedge.simulators.devices.modbus_server import SiteSimulator, serve_site
from flexedge.tools.harness.broker import PrivateBroker, free_port
from tests.support.harness import FakeClock, run, wait_for_async, write_site_file

ROOT = Path(__file__).resolve().parents[2]
SITE_NAME = "fault-site"

SITE = """\
site: fault-site
devices:
  - name: b1
    host: 127.0.0.1
    port: {port}
    unit_id: 3
    timeout_s: 0.5
    register_map: battery_generic
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


def write_site(tmp_path: Path, port: int = 5020) -> Path:
    return write_site_file(tmp_path, SITE.format(port=port))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return load_site(write_site(tmp_path))


def driver(
    site: Site,
    address: tuple[str, int],
    timeout_s: float | None = None,
) -> ModbusTcpDevice:
    config = site.config.device("b1")
    host, port = address
    return ModbusTcpDevice(
        "b1",
        host,
        port,
        config.unit_id,
        config.timeout_s if timeout_s is None else timeout_s,
        site.maps["b1"],
    )


@contextlib.asynccontextmanager
async def served(
    site: Site,
    clock: FakeClock | None = None,
) -> AsyncIterator[tuple[SiteSimulator, ModbusTcpDevice]]:
    sim = await serve_site(site, port=0, clock=clock or FakeClock())
    device = driver(site, sim.address("b1"))
    try:
        await device.connect()
        yield sim, device
    finally:
        await device.close()
        await sim.stop()


# -- the fault model -------------------------------------------------------------------------


def test_messages_combine_and_clear_resets_first() -> None:
    state = updated(FaultState(), {"drop": True, "latency_s": 0.5, "exception": "device_busy"})
    assert state == FaultState(drop=True, latency_s=0.5, exception=ExcCodes.DEVICE_BUSY)
    assert updated(state, {"clear": True, "frozen": True}) == FaultState(frozen=True)
    assert updated(state, {"exception": None}).exception is None
    # The Modbus spec's names are accepted for pymodbus's.
    assert updated(state, {"exception": "SLAVE_DEVICE_BUSY"}).exception is ExcCodes.DEVICE_BUSY


@pytest.mark.parametrize(
    "message",
    [
        {"drop": True, "bogus": 1},
        {"clear": True, "latency_s": -1},
        {"latency_s": True},
        {"latency_s": float("nan")},
        {"frozen": "yes"},
        {"clear": True, "exception": "NOT_A_CODE"},
        {"exception": 4},
    ],
)
def test_bad_message_changes_nothing(message: dict[str, object]) -> None:
    faults = DeviceFaults("b1")
    faults.latency_s = 0.25
    seen: list[FaultState] = []
    faults.add_listener(lambda _before, after: seen.append(after))
    with pytest.raises(FaultError):
        faults.apply(message)
    assert faults.state == FaultState(latency_s=0.25)
    assert seen == []


def test_cli_options_become_one_message() -> None:
    assert fault_message(clear=True, drop=True, latency_s=0.5, exception="none") == {
        "clear": True,
        "drop": True,
        "latency_s": 0.5,
        "exception": None,
    }
    args = build_parser().parse_args(
        ["fault", "--mqtt", "h:1", "--site", "s", "--device", "d", "--no-frozen", "--ignore-writes"]
    )
    assert fault_message(
        drop=args.drop,
        latency_s=args.latency,
        exception=args.exception,
        frozen=args.frozen,
        ignore_writes=args.ignore_writes,
        clear=args.clear,
    ) == {"frozen": False, "ignore_writes": True}


# -- what the driver sees --------------------------------------------------------------------


def test_drop_closes_connections_until_cleared(site: Site) -> None:
    async def body() -> None:
        async with served(site) as (sim, device):
            assert (await device.read()).soc == pytest.approx(0.6)
            address = sim.address("b1")
            before, before_w = await asyncio.open_connection(*address)
            sim.faults("b1").drop = True
            # At the socket: the open connection and a new one both end at once (EOF).
            after, after_w = await asyncio.open_connection(*address)
            try:
                async with asyncio.timeout(2):
                    assert await before.read(1) == b""
                    assert await after.read(1) == b""
            finally:
                before_w.close()
                after_w.close()
            with pytest.raises(DeviceUnavailable):
                await device.read()
            # The driver reconnects on the next call; the new connection is closed too.
            with pytest.raises(DeviceUnavailable):
                await device.read()
            sim.faults("b1").clear()
            assert (await device.read()).soc == pytest.approx(0.6)
            assert sim.address("b1") == address

    run(body())


def test_latency_beyond_the_timeout_is_unavailable(site: Site) -> None:
    async def body() -> None:
        async with served(site) as (sim, _device):
            sim.faults("b1").latency_s = 0.5
            impatient = driver(site, sim.address("b1"), timeout_s=0.2)
            patient = driver(site, sim.address("b1"), timeout_s=1.0)
            try:
                with pytest.raises(DeviceUnavailable):
                    await impatient.read()
                started = time.monotonic()
                reading = await patient.read()
                assert time.monotonic() - started >= 0.5  # a lower bound: load only adds
                assert reading.soc == pytest.approx(0.6)
            finally:
                await impatient.close()
                await patient.close()

    run(body())


@pytest.mark.parametrize(
    ("name", "code"),
    [("DEVICE_FAILURE", ExcCodes.DEVICE_FAILURE), ("SLAVE_DEVICE_BUSY", ExcCodes.DEVICE_BUSY)],
)
def test_exception_is_a_protocol_error_naming_the_code(
    site: Site, name: str, code: ExcCodes
) -> None:
    async def body() -> None:
        async with served(site) as (sim, device):
            sim.faults("b1").apply({"exception": name})
            with pytest.raises(DeviceProtocolError, match=f"exception code {int(code)}$"):
                await device.read()
            with pytest.raises(DeviceProtocolError, match=f"exception code {int(code)}$"):
                await device.write_setpoint(1.0)
            assert sim.model("b1", BatteryModel).setpoint_kw == 0.0
            sim.faults("b1").exception = None
            assert (await device.read()).soc == pytest.approx(0.6)

    run(body())


def test_gateway_exception_is_unavailable(site: Site) -> None:
    async def body() -> None:
        async with served(site) as (sim, device):
            sim.faults("b1").exception = ExcCodes.GATEWAY_NO_RESPONSE
            with pytest.raises(DeviceUnavailable, match="exception code 11"):
                await device.read()

    run(body())


def test_frozen_reads_are_stale_while_the_physics_goes_on(site: Site) -> None:
    clock = FakeClock()

    async def body() -> None:
        async with served(site, clock) as (sim, device):
            await device.configure_lease(3600)
            before = await device.read()
            sim.faults("b1").frozen = True
            await device.write_setpoint(2.0)  # writes still reach the model
            clock.now += 600
            stale = await device.read()
            model = sim.model("b1", BatteryModel)
            assert (stale.soc, stale.p_kw, stale.setpoint_kw) == (before.soc, 0.0, 0.0)
            assert model.p_kw == 2.0
            assert before.soc is not None and model.soc < before.soc - 0.03
            sim.faults("b1").frozen = False
            fresh = await device.read()
            assert fresh.soc == pytest.approx(model.soc, abs=1e-4)
            assert (fresh.p_kw, fresh.setpoint_kw) == (2.0, 2.0)

    run(body())


def test_ignored_writes_are_acknowledged_but_not_applied(site: Site) -> None:
    async def body() -> None:
        async with served(site) as (sim, device):
            sim.faults("b1").ignore_writes = True
            await device.write_setpoint(3.0)
            reading = await device.read()
            assert reading.setpoint_kw == 0.0  # the read-back mismatch a controller sees
            assert (
                sim.model("b1", BatteryModel).setpoint_kw,
                sim.model("b1", BatteryModel).p_kw,
            ) == (0.0, 0.0)
            sim.faults("b1").ignore_writes = False
            await device.write_setpoint(3.0)
            assert (await device.read()).setpoint_kw == 3.0
            assert sim.model("b1").p_kw == 3.0

    run(body())


# A writable register the model does not own (the controller heartbeat at 12): it keeps what
# was written, so only the fault handling inside the request (not the next refresh from the
# model) can keep it unchanged.
@pytest.mark.parametrize("fault", ["ignore_writes", "frozen"])
def test_faults_keep_registers_the_model_does_not_own(tmp_path: Path, fault: str) -> None:
    site = load_site(write_site(tmp_path))

    async def body() -> None:
        async with served(site) as (sim, _device):
            host, port = sim.address("b1")
            client = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
            try:
                assert await client.connect()
                assert not (await client.write_register(12, 7, device_id=3)).isError()
                sim.faults("b1").apply({fault: True})
                assert not (await client.write_register(12, 9, device_id=3)).isError()
                assert (await client.read_holding_registers(12, device_id=3)).registers == [7]
            finally:
                client.close()

    run(body())


# -- control over MQTT -----------------------------------------------------------------------


async def retained_state(
    broker: PrivateBroker, device: str = "b1", wait: float = 5.0
) -> dict[str, Any] | None:
    """The retained fault state of `device`, or None if none comes within `wait` s."""
    link = MqttLink(host=broker.host, port=broker.port, client_id=f"probe-{time.monotonic()}")
    await link.start(wait=5)
    try:
        link.subscribe(state_topic(SITE_NAME, device))
        await link.wait_subscribed(5)
        async with asyncio.timeout(wait):
            while True:
                msg = await link.inbound.get()
                link.ack(msg)
                if msg.retain and msg.payload:
                    state: dict[str, Any] = json.loads(msg.payload)
                    return state
    except TimeoutError:
        return None
    finally:
        await link.stop()


async def publish_raw(broker: PrivateBroker, topic: str, payloads: list[bytes]) -> None:
    link = MqttLink(host=broker.host, port=broker.port, client_id=f"raw-{time.monotonic()}")
    await link.start(wait=5)
    try:
        for payload in payloads:
            mid = link.publish(topic, payload, qos=1)
            assert mid is not None
            assert await link.wait_published(mid, 5)
    finally:
        await link.stop()


def test_faults_switch_over_mqtt(
    tmp_path: Path, broker: PrivateBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_site(tmp_path)
    site = load_site(path)
    mqtt = (broker.host, broker.port)

    async def body() -> None:
        stop = asyncio.Event()
        started: list[SiteSimulator] = []
        task = asyncio.create_task(
            run_sim(path, port=0, stop=stop, on_started=started.append, mqtt=mqtt)
        )
        await wait_for_async(lambda: started, 10, "run_sim to start")
        sim = started[0]
        device = driver(site, sim.address("b1"))
        try:
            assert await retained_state(broker) == FaultState().to_json()
            confirmed = await send_fault(
                Broker(*mqtt), SITE_NAME, "b1", {"exception": "DEVICE_FAILURE"}
            )
            assert confirmed == FaultState(exception=ExcCodes.DEVICE_FAILURE).to_json()
            with pytest.raises(DeviceProtocolError, match=r"exception code 4$"):
                await device.read()

            # Bad messages, then a good one: QoS 1 from one client arrives in order, so its
            # confirmation shows the bad ones were handled, and changed nothing.
            await publish_raw(
                broker,
                command_topic(SITE_NAME, "b1"),
                [
                    b"not json",
                    b"[1]",
                    b'{"clear": true, "bogus": 1}',
                    b'{"clear": true, "latency_s": -1}',
                ],
            )
            await publish_raw(broker, command_topic(SITE_NAME, "nope"), [b'{"clear": true}'])
            assert await send_fault(Broker(*mqtt), SITE_NAME, "b1", {"drop": False}) == confirmed
            assert await retained_state(broker) == confirmed
            assert sim.faults("b1").state == FaultState(exception=ExcCodes.DEVICE_FAILURE)

            # `flexedge fault` itself, in a thread: it runs its own event loop.
            args = build_parser().parse_args(
                [
                    "fault",
                    "--mqtt",
                    f"{mqtt[0]}:{mqtt[1]}",
                    "--site",
                    SITE_NAME,
                    "--device",
                    "b1",
                    "--clear",
                ]
            )
            assert await asyncio.to_thread(args.func, args) == 0
            assert "b1: no faults" in capsys.readouterr().out
            assert (await device.read()).soc == pytest.approx(0.6, abs=0.01)
            assert await retained_state(broker) == FaultState().to_json()
        finally:
            await device.close()
            stop.set()
            await asyncio.wait_for(task, 10)
        # The retained state describes a running simulator only.
        assert await retained_state(broker, wait=0.3) is None

    run(body())


def test_fault_command_without_simulator_exits_1(
    broker: PrivateBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(
        [
            "fault",
            "--mqtt",
            f"{broker.host}:{broker.port}",
            "--site",
            "nobody",
            "--device",
            "b1",
            "--drop",
            "--timeout",
            "0.5",
        ]
    )
    assert args.func(args) == 1
    assert "no simulator confirmed" in capsys.readouterr().err


def test_flexedge_sim_process_takes_faults(tmp_path: Path, broker: PrivateBroker) -> None:
    port = free_port()
    path = write_site(tmp_path, port)
    site = load_site(path)
    log = tmp_path / "sim.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flexedge.cli.main",
                "sim",
                "--config",
                str(path),
                "--mqtt",
                f"{broker.host}:{broker.port}",
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    async def body() -> None:
        # The retained state appears once fault control is up, after the Modbus servers.
        async def fault_control_up() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")
            return await retained_state(broker, wait=0.2) is not None

        await wait_for_async(fault_control_up, 15, "the simulator's retained fault state")
        device = driver(site, ("127.0.0.1", port))
        try:
            await device.read()
            assert (
                await send_fault(Broker(broker.host, broker.port), SITE_NAME, "b1", {"drop": True})
                == FaultState(drop=True).to_json()
            )
            with pytest.raises(DeviceUnavailable):
                await device.read()
            await send_fault(Broker(broker.host, broker.port), SITE_NAME, "b1", {"clear": True})
            assert (await device.read()).soc == pytest.approx(0.6, abs=0.01)
        finally:
            await device.close()

    try:
        run(body())
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text(errors="replace")
