"""Batteries and generators over MQTT JSON, and simulator faults on MQTT devices, against a
real Mosquitto: config checks, the driver against the simulated devices, the models following
the commands, the lease, and what the driver sees under each fault."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pymodbus.constants import ExcCodes

from flexedge.cli.sim import run_sim
from flexedge.config.loader import load_site
from flexedge.config.schema import SiteConfig
from flexedge.controller.core.health import setpoint_confirmed
from flexedge.drivers.base import Reading
from flexedge.drivers.factory import build_device
from flexedge.drivers.mqtt_device import MqttJsonDevice
from flexedge.errors import ConfigError, DeviceUnavailable
from flexedge.mqtt import Broker, MqttLink
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.fault_client import send_fault
from flexedge.simulators.devices.fault_mqtt import FaultControl
from flexedge.simulators.devices.faults import FaultError, FaultState, command_topic
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.modbus_server import SiteSimulator
from flexedge.simulators.devices.mqtt_devices import MqttDeviceSimulator
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run, wait_for_async, write_site_file

Raw = dict[str, Any]
SITE_NAME = "mqtt-kinds"


def with_mqtt(raw: Raw, mqtt_device: dict[str, Any] | None) -> Raw:
    topic = f"test/{uuid.uuid4().hex[:8]}/{raw['name']}"
    raw["mqtt_device"] = {
        "state_topic": f"{topic}/state",
        "command_topic": f"{topic}/set",
        "stale_after_s": 5,
        **(mqtt_device or {}),
    }
    return raw


def battery(mqtt_device: dict[str, Any] | None = None, **device: Any) -> Raw:
    # 0.1 kWh: a few kW move the SoC by about a percent a second, visible within a test.
    raw: Raw = {
        "name": "bat",
        "kind": "battery",
        "transport": "mqtt",
        "capacity_kwh": 0.1,
        "max_charge_kw": 5,
        "max_discharge_kw": 5,
        "setpoint_timeout_s": 60,
        "simulator": {"initial_soc": 0.5},
        **device,
    }
    return with_mqtt(raw, mqtt_device)


def generator(mqtt_device: dict[str, Any] | None = None, **device: Any) -> Raw:
    raw: Raw = {
        "name": "gen",
        "kind": "generator",
        "transport": "mqtt",
        "min_kw": 1,
        "max_kw": 6,
        "ramp_kw_per_s": 4,
        "setpoint_timeout_s": 60,
        **device,
    }
    return with_mqtt(raw, mqtt_device)


def plug(mqtt_device: dict[str, Any] | None = None) -> Raw:
    raw: Raw = {
        "name": "plug",
        "kind": "flexible_load",
        "transport": "mqtt",
        "control": "relay",
        "baseline_profile": [[0, 2.0]],
        "curtailable_share": 1.0,
        "max_kw": 2,
    }
    return with_mqtt(raw, mqtt_device)


def site_raw(host: str, port: int, *devices: Raw) -> Raw:
    return {"site": SITE_NAME, "mqtt": {"host": host, "port": port}, "devices": list(devices)}


def config_of(broker: PrivateBroker, *devices: Raw) -> SiteConfig:
    return SiteConfig.model_validate(site_raw(broker.host, broker.port, *devices))


@contextlib.asynccontextmanager
async def simulated(
    config: SiteConfig,
) -> AsyncIterator[tuple[MqttDeviceSimulator, list[MqttJsonDevice]]]:
    """The simulator (state every 0.1 s) and a connected driver per device."""
    sim = MqttDeviceSimulator.from_site(config, publish_interval_s=0.1)
    await sim.start(wait=5)
    devices = [MqttJsonDevice.from_config(d, config.mqtt) for d in config.devices]
    try:
        for device in devices:
            await device.connect()
        yield sim, devices
    finally:
        for device in devices:
            await device.close()
        await sim.stop()


async def settle(
    device: MqttJsonDevice,
    check: Callable[[Reading], bool],
    timeout: float = 3.0,
    seen: list[Reading] | None = None,
) -> Reading:
    """Read until `check` holds (every reading into `seen`); fail with the last reading
    after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Reading | DeviceUnavailable | None = None
    while loop.time() < deadline:
        try:
            last = await device.read()
        except DeviceUnavailable as exc:
            last = exc
        if isinstance(last, Reading):
            if seen is not None:
                seen.append(last)
            if check(last):
                return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"{device.name}: not reached within {timeout} s; last: {last!r}")


async def unavailable(device: MqttJsonDevice, timeout: float = 3.0) -> DeviceUnavailable:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            await device.read()
        except DeviceUnavailable as exc:
            return exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{device.name} still available after {timeout} s")


def power(kw: float, setpoint_kw: float | None = None) -> Callable[[Reading], bool]:
    """The reading shows `kw`, and (if given) the device's setpoint echo `setpoint_kw`."""
    return lambda r: (
        abs(r.p_kw - kw) < 1e-6
        and (
            setpoint_kw is None
            or (r.setpoint_kw is not None and abs(r.setpoint_kw - setpoint_kw) < 1e-6)
        )
    )


def newer_than(ts: float) -> Callable[[Reading], bool]:
    return lambda r: r.ts > ts


# --- config -------------------------------------------------------------------------------


def test_setpoint_kinds_default_to_the_site_sign(broker: PrivateBroker) -> None:
    config = config_of(broker, battery(), generator(), plug())
    bat, gen, load = (d.mqtt_device for d in config.devices)
    assert bat is not None and gen is not None and load is not None
    assert (bat.command, bat.setpoint_field, bat.soc_field) == (None, "setpoint_w", "soc")
    # Batteries and generators report injection positive; plugs report what they draw.
    assert (bat.consumption_positive, gen.consumption_positive) == (False, False)
    assert load.consumption_positive is True
    drivers = {d.name: MqttJsonDevice.from_config(d, config.mqtt) for d in config.devices}
    assert (drivers["bat"].command, drivers["bat"].soc_field) == ("setpoint", "soc")
    assert (drivers["gen"].command, drivers["gen"].soc_field) == ("setpoint", None)
    assert drivers["plug"].command == "relay"
    # Said explicitly, the kind's default gives way.
    [own] = config_of(broker, battery({"consumption_positive": True})).devices
    assert own.mqtt_device is not None and own.mqtt_device.consumption_positive is True


@pytest.mark.parametrize(
    ("device", "field", "problem"),
    [
        (
            battery({"command": "relay"}),
            "",
            "mqtt_device.command 'relay' is only for flexible "
            "loads; a battery takes command 'setpoint'",
        ),
        (generator({"command": "limit"}), "", "a generator takes command 'setpoint'"),
        (battery({"command": "volts"}), "mqtt_device.command", "'relay', 'limit' or 'setpoint'"),
        (
            battery({"limit_field": "cap"}),
            "",
            "mqtt_device.limit_field only apply to flexible loads",
        ),
        (generator({"relay_on_payload": "ON"}), "", "mqtt_device.relay_on_payload only apply"),
        (generator({"soc_field": "soc"}), "", "mqtt_device.soc_field only apply to batteries"),
        (
            plug({"setpoint_field": "p"}),
            "",
            "mqtt_device.setpoint_field only apply to batteries and generators",
        ),
        (plug({"command": "setpoint"}), "", "'setpoint' is for batteries and generators"),
        (battery({"setpoint_field": ""}), "mqtt_device.setpoint_field", "at least 1"),
        (battery({"soc_field": "bms..soc"}), "mqtt_device.soc_field", "pattern"),
        (
            battery({"soc_field": "power"}),
            "",
            "mqtt_device.power_field 'power' and soc_field 'power' name the same place",
        ),
        (battery({"power_field": "ac", "soc_field": "ac.soc"}), "", "name the same place"),
    ],
)
def test_bad_setpoint_config_names_the_field(
    tmp_path: Path, device: Raw, field: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, site_raw("127.0.0.1", 1883, device)))
    assert info.value.field.startswith(f"devices[0] ({device['name']})")
    assert info.value.field.endswith(field)
    assert problem in info.value.problem


# --- the devices over the broker ------------------------------------------------------------


def test_battery_follows_setpoints_then_its_lease(broker: PrivateBroker) -> None:
    config = config_of(broker, battery(setpoint_timeout_s=2))

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            model = sim.model("bat", BatteryModel)
            idle = await settle(device, power(0.0, 0.0))
            assert idle.soc == pytest.approx(0.5)
            assert sim.devices["bat"].state() == {"power": 0.0, "soc": 50.0, "setpoint_w": 0.0}
            with pytest.raises(ValueError, match="needs a setpoint"):
                await device.write_setpoint(None)

            await device.write_setpoint(2.0)  # discharge
            first = await settle(device, power(2.0, 2.0))
            assert first.soc is not None
            later = await settle(device, lambda r: r.soc is not None and r.soc < first.soc - 0.003)  # type: ignore[operator]
            assert later.soc == pytest.approx(model.soc, abs=0.005)
            assert sim.devices["bat"].state()["setpoint_w"] == 2000.0

            await device.write_setpoint(-3.0)  # charge
            charging = await settle(device, power(-3.0, -3.0))
            assert charging.soc is not None
            await settle(device, lambda r: r.soc is not None and r.soc > charging.soc + 0.003)  # type: ignore[operator]
            # No command for setpoint_timeout_s (2 s): the battery stops on its own.
            await settle(device, power(0.0, 0.0), timeout=3.5)
            assert (model.setpoint_kw, model.p_kw) == (0.0, 0.0)

    run(scenario)


def test_generator_ramps_to_its_setpoint_then_stops_after_its_lease(broker: PrivateBroker) -> None:
    config = config_of(broker, generator(setpoint_timeout_s=2))

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            await settle(device, power(0.0, 0.0))
            ramp: list[Reading] = []
            await device.write_setpoint(4.0)
            await settle(device, power(4.0, 4.0), seen=ramp)
            # 4 kW/s: a second from 0 to 4 kW, seen on the way at 0.1 s telemetry.
            assert any(0.0 < r.p_kw < 4.0 for r in ramp), [r.p_kw for r in ramp]
            assert [r.p_kw for r in ramp] == sorted(r.p_kw for r in ramp)
            assert sim.model("gen", GeneratorModel).p_kw == 4.0
            assert sim.devices["gen"].state() == {"power": 4000.0, "setpoint_w": 4000.0}
            # The lease ends 2 s after the command: back to the fallback (stop), ramping.
            down: list[Reading] = []
            await settle(device, power(0.0, 0.0), timeout=4.0, seen=down)
            assert any(0.0 < r.p_kw < 4.0 for r in down)

    run(scenario)


def test_device_sign_unit_and_nested_fields_agree_with_the_driver(broker: PrivateBroker) -> None:
    """A BMS gateway that reports charging positive, in kW, with nested fields: the driver
    still reads the site convention. Setpoints stay in the site sign."""
    config = config_of(
        broker,
        battery(
            {
                "power_field": "ac.p",
                "soc_field": "bms.soc",
                "setpoint_field": "p_set",
                "power_unit": "kW",
                "consumption_positive": True,
            }
        ),
    )

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            await device.write_setpoint(-2.0)
            reading = await settle(device, power(-2.0, -2.0))
            assert reading.soc is not None and 0.5 <= reading.soc < 0.6
            state = sim.devices["bat"].state()
            assert state["ac"] == {"p": 2.0} and state["p_set"] == -2.0
            assert set(state) == {"ac", "bms", "p_set"}

    run(scenario)


def test_battery_state_needs_a_soc_percentage(broker: PrivateBroker) -> None:
    raw = battery()
    config = config_of(broker, raw)
    topic = raw["mqtt_device"]["state_topic"]

    async def scenario() -> None:
        fake = MqttLink(host=broker.host, port=broker.port, client_id=f"fake-{uuid.uuid4()}")
        await fake.start(wait=5)
        device = MqttJsonDevice.from_config(config.devices[0], config.mqtt)
        try:
            await device.connect()
            for bad in ({"power": 100, "setpoint_w": 0}, {"power": 100, "soc": 140}):
                fake.publish(topic, json.dumps(bad).encode())
            fake.publish(topic, b'{"power": -1500, "soc": 42.5}')
            reading = await settle(device, lambda r: True)
            # Both bad ones were dropped (QoS 0 from one client arrives in order).
            assert (reading.p_kw, reading.soc, reading.setpoint_kw) == (-1.5, 0.425, None)
        finally:
            await device.close()
            await fake.stop()

    run(scenario)


# --- faults on MQTT devices -----------------------------------------------------------------


def test_drop_silences_the_device_and_loses_commands(broker: PrivateBroker) -> None:
    config = config_of(broker, battery({"stale_after_s": 0.5}), generator())

    async def scenario() -> None:
        async with simulated(config) as (sim, [device, gen]):
            await settle(device, power(0.0, 0.0))
            sim.faults("bat").drop = True
            exc = await unavailable(device, timeout=2.0)
            assert "stale_after_s 0.5" in str(exc)
            await device.write_setpoint(2.0)  # the broker takes it; the device never sees it
            # A later command over the same link, to the generator, has arrived: the
            # battery's, sent before it, has reached the simulator too.
            await gen.write_setpoint(2.0)
            await settle(gen, lambda r: r.setpoint_kw is not None and r.setpoint_kw > 1.99)
            assert sim.model("bat", BatteryModel).setpoint_kw == 0.0
            sim.faults("bat").clear()
            await settle(device, power(0.0, 0.0))

    run(scenario)


def test_frozen_state_repeats_while_the_model_moves(broker: PrivateBroker) -> None:
    config = config_of(broker, battery())

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            model = sim.model("bat", BatteryModel)
            await device.write_setpoint(4.0)
            await settle(device, power(4.0, 4.0))
            sim.faults("bat").frozen = True
            frozen = await settle(device, newer_than(time.time()))
            await device.write_setpoint(5.0)  # commands still reach the model

            def model_moved_on() -> bool:
                sim.devices["bat"].state()  # brings the model to now
                return (
                    model.p_kw == 5.0 and frozen.soc is not None and frozen.soc - model.soc > 0.005
                )

            await wait_for_async(model_moved_on, 3, "the model to discharge under the frozen state")
            again = await settle(device, newer_than(time.time()))
            # New messages, the old content: same power, SoC and setpoint.
            assert (
                (again.p_kw, again.soc, again.setpoint_kw)
                == (frozen.p_kw, frozen.soc, frozen.setpoint_kw)
                == (4.0, frozen.soc, 4.0)
            )
            sim.devices["bat"].state()  # brings the model to now
            # 5 kW moves 0.1 kWh by about 1.4 % a second.
            assert model.p_kw == 5.0 and frozen.soc is not None
            assert frozen.soc - model.soc > 0.005
            sim.faults("bat").frozen = False
            fresh = await settle(device, power(5.0, 5.0))
            assert fresh.soc == pytest.approx(model.soc, abs=0.005)

    run(scenario)


def test_ignored_commands_leave_the_setpoint_echo_unchanged(broker: PrivateBroker) -> None:
    config = config_of(broker, battery())

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            await settle(device, power(0.0, 0.0))
            sim.faults("bat").ignore_writes = True
            await device.write_setpoint(2.0)
            # State sent after the command: the device answered, unchanged.
            reading = await settle(device, newer_than(time.time()))
            assert (reading.p_kw, reading.setpoint_kw) == (0.0, 0.0)
            assert not setpoint_confirmed(2.0, reading.setpoint_kw)  # what the controller sees
            assert sim.model("bat", BatteryModel).setpoint_kw == 0.0
            sim.faults("bat").ignore_writes = False
            await device.write_setpoint(2.0)
            reading = await settle(device, power(2.0, 2.0))
            assert setpoint_confirmed(2.0, reading.setpoint_kw)

    run(scenario)


def test_latency_delays_commands_and_state(broker: PrivateBroker) -> None:
    config = config_of(broker, battery())

    async def scenario() -> None:
        async with simulated(config) as (sim, [device]):
            await settle(device, power(0.0, 0.0))
            sim.faults("bat").latency_s = 0.4
            sent = time.monotonic()
            await device.write_setpoint(4.0)
            await settle(device, power(4.0, 4.0))
            # The command takes 0.4 s in, the state showing it another 0.4 s out (a lower
            # bound: a slow machine only makes it later).
            assert time.monotonic() - sent >= 0.8
            # Readings lag: what arrives now was the device's state 0.4 s ago, when the
            # SoC was higher than the model's now (4 kW: about 0.5 % in 0.4 s).
            lagging = await settle(device, newer_than(time.time()))
            sim.devices["bat"].state()  # brings the model to now
            assert lagging.soc is not None
            assert lagging.soc - sim.model("bat", BatteryModel).soc > 0.002
            sim.faults("bat").latency_s = 0
            await device.write_setpoint(0.0)
            # Within less than the 0.8 s the latency cost: it no longer applies.
            await settle(device, power(0.0, 0.0), timeout=0.75)

    run(scenario)


def test_exception_fault_is_refused_for_mqtt_devices(broker: PrivateBroker) -> None:
    config = config_of(broker, battery(), generator())
    sim = MqttDeviceSimulator.from_site(config)  # not started: faults need no broker
    faults = sim.faults("bat")
    faults.latency_s = 0.25
    with pytest.raises(FaultError, match=r"bat: no exception fault: an MQTT device"):
        faults.apply({"exception": "DEVICE_FAILURE", "drop": True})
    with pytest.raises(FaultError, match="no exception fault"):
        faults.exception = ExcCodes.DEVICE_BUSY
    assert faults.state == FaultState(latency_s=0.25)  # nothing changed
    faults.apply({"exception": None, "clear": True})  # switching it off is fine
    # Over MQTT, fault control refuses it like any bad value.
    control = FaultControl(
        SiteSimulator([]), SITE_NAME, Broker(broker.host, broker.port), mqtt_devices=sim
    )
    assert control.handle(command_topic(SITE_NAME, "gen"), b'{"exception": "ACKNOWLEDGE"}') is None
    assert control.handle(command_topic(SITE_NAME, "gen"), b'{"frozen": true}') == FaultState(
        frozen=True
    )


def test_flexedge_sim_serves_them_and_takes_their_faults(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    """`flexedge sim --mqtt` serves an MQTT battery and generator; `flexedge fault` over MQTT
    reaches them like Modbus devices."""
    path = write_site_file(
        tmp_path, site_raw(broker.host, broker.port, battery({"stale_after_s": 1.5}), generator())
    )
    site = load_site(path)
    mqtt = (broker.host, broker.port)

    async def scenario() -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            run_sim(path, stop=stop, on_started=lambda _: started.set(), mqtt=mqtt)
        )
        await asyncio.wait(
            [task, asyncio.create_task(started.wait())],
            timeout=5,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert started.is_set(), task.exception() if task.done() else "sim did not start"
        devices = [
            build_device(d, site.maps[d.name], mqtt=site.config.mqtt) for d in site.config.devices
        ]
        bat, gen = devices
        assert isinstance(bat, MqttJsonDevice) and isinstance(gen, MqttJsonDevice)
        try:
            assert (await settle(bat, power(0.0), timeout=3.0)).soc == pytest.approx(0.5)
            await gen.write_setpoint(2.0)
            await settle(gen, power(2.0, 2.0), timeout=3.0)

            assert (
                await send_fault(Broker(*mqtt), SITE_NAME, "bat", {"drop": True})
                == FaultState(drop=True).to_json()
            )
            await unavailable(bat, timeout=3.0)
            # Refused by the simulator: it answers why, and nothing changed.
            refused = await send_fault(
                Broker(*mqtt), SITE_NAME, "gen", {"exception": "DEVICE_BUSY"}
            )
            assert refused is not None and "no exception fault" in str(refused["error"])
            assert (
                await send_fault(Broker(*mqtt), SITE_NAME, "bat", {"clear": True})
                == FaultState().to_json()
            )
            await settle(bat, power(0.0), timeout=3.0)
            assert (await gen.read()).p_kw == 2.0
        finally:
            for device in devices:
                await device.close()
            stop.set()
            await asyncio.wait_for(task, 10)

    run(scenario, timeout=20)
