"""MQTT JSON devices against a real Mosquitto: config checks, the driver against the
simulated plug and limited load, staleness, malformed state, one shared connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from flexedge.cli.sim import run_sim
from flexedge.config.loader import load_site
from flexedge.config.schema import MqttSettings, SiteConfig
from flexedge.drivers.base import Reading
from flexedge.drivers.factory import build_device
from flexedge.drivers.mqtt_device import MqttJsonDevice
from flexedge.errors import ConfigError, DeviceUnavailable
from flexedge.mqtt import Broker, MqttLink
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.mqtt_devices import MqttDeviceSimulator
from flexedge.tools.harness.broker import PrivateBroker, free_port
from tests.support.harness import run, wait_for_async, write_site_file

Raw = dict[str, Any]


def load_raw(name: str, control: str, *, kw: float, share: float, **device: Any) -> Raw:
    topic = f"test/{uuid.uuid4().hex[:8]}/{name}"
    raw: Raw = {
        "name": name,
        "kind": "flexible_load",
        "transport": "mqtt",
        "baseline_profile": [[0, kw]],
        "curtailable_share": share,
        "control": control,
        "max_kw": kw,
        "setpoint_timeout_s": 60,
        "mqtt_device": {
            "state_topic": f"{topic}/state",
            "command_topic": f"{topic}/set",
            "stale_after_s": 5,
        },
    }
    for key, value in device.items():
        if key == "mqtt_device":
            raw["mqtt_device"].update(value)
        else:
            raw[key] = value
    return raw


def site_raw(broker: PrivateBroker, *devices: Raw) -> Raw:
    return {
        "site": "mqtt-test",
        "mqtt": {"host": broker.host, "port": broker.port},
        "devices": list(devices),
    }


PLUG = dict(control="relay", kw=2.0, share=0.75)  # sheds 1.5 of 2 kW; 0.5 kW is firm
CHARGER = dict(control="limit", kw=5.0, share=0.8)  # 1 kW firm


def plug(**device: Any) -> Raw:
    return load_raw("plug-1", **PLUG, **device)  # type: ignore[arg-type]


def charger(**device: Any) -> Raw:
    return load_raw("charger-1", **CHARGER, **device)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def simulated(config: SiteConfig) -> AsyncIterator[MqttDeviceSimulator]:
    sim = MqttDeviceSimulator.from_site(config, publish_interval_s=0.1)
    await sim.start(wait=5)
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def drivers(config: SiteConfig) -> AsyncIterator[list[MqttJsonDevice]]:
    devices = [MqttJsonDevice.from_config(d, config.mqtt) for d in config.devices]
    try:
        for device in devices:
            await device.connect()
        yield devices
    finally:
        for device in devices:
            await device.close()


async def settle(
    device: MqttJsonDevice, check: Callable[[Reading], bool], timeout: float = 3.0
) -> Reading:
    """Read until `check` holds; fail with the last reading after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Reading | DeviceUnavailable | None = None
    while loop.time() < deadline:
        try:
            last = await device.read()
        except DeviceUnavailable as exc:
            last = exc
        if isinstance(last, Reading) and check(last):
            return last
        await asyncio.sleep(0.05)
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


def near(kw: float) -> Callable[[Reading], bool]:
    return lambda r: abs(r.p_kw - kw) < 1e-6


# --- config -------------------------------------------------------------------------------


def test_mqtt_device_config_defaults(tmp_path: Path, broker: PrivateBroker) -> None:
    site = load_site(write_site_file(tmp_path, site_raw(broker, plug())))
    [device] = site.config.devices
    md = device.mqtt_device
    assert device.transport == "mqtt" and md is not None
    assert (md.power_field, md.power_unit, md.consumption_positive) == ("power", "W", True)
    assert (md.command, md.relay_on_payload, md.relay_off_payload) == (None, "on", "off")
    assert (md.limit_field, md.host, md.port) == ("limit_w", None, None)


def _set(path: str, value: Any) -> Callable[[Raw], None]:
    def change(device: Raw) -> None:
        *parents, leaf = path.split(".")
        node = device
        for key in parents:
            node = node[key]
        node[leaf] = value

    return change


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (lambda d: d.pop("mqtt_device"), "", "needs an mqtt_device section"),
        (_set("host", "10.0.0.9"), "", "host only apply to Modbus"),
        (_set("serial", {"port": "/dev/ttyUSB0"}), "", "serial only apply to Modbus"),
        (_set("register_map", "flexible_load_relay"), "", "register_map only apply to Modbus"),
        (_set("mqtt_device.state_topic", "plugs/+/state"), "mqtt_device.state_topic", "wildcards"),
        (_set("mqtt_device.command_topic", ""), "mqtt_device.command_topic", "at least 1"),
        (_set("mqtt_device.power_unit", "mW"), "mqtt_device.power_unit", "'W' or 'kW'"),
        (_set("mqtt_device.power_field", "ENERGY..Power"), "mqtt_device.power_field", "pattern"),
        (_set("mqtt_device.port", 1884), "mqtt_device", "mqtt_device.port needs mqtt_device.host"),
        (_set("mqtt_device.relay_off_payload", "on"), "mqtt_device", "must differ"),
        (
            _set("mqtt_device.command", "limit"),
            "",
            "mqtt_device.command 'limit' differs from control 'relay'",
        ),
        (_set("mqtt_device.stale_after_s", 0), "mqtt_device.stale_after_s", "greater than 0"),
        (_set("mqtt_device.colour", "red"), "mqtt_device.colour", "Extra inputs"),
    ],
)
def test_bad_mqtt_device_config_names_the_field(
    tmp_path: Path, broker: PrivateBroker, change: Callable[[Raw], None], field: str, problem: str
) -> None:
    device = plug()
    change(device)
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, site_raw(broker, device)))
    assert info.value.field.startswith("devices[0] (plug-1)")
    assert info.value.field.endswith(field)
    assert problem in info.value.problem


def test_mqtt_config_refused_where_it_does_not_apply(tmp_path: Path, broker: PrivateBroker) -> None:
    modbus = plug(transport="modbus-tcp")
    with pytest.raises(ConfigError, match="mqtt_device is only for transport mqtt"):
        load_site(write_site_file(tmp_path, site_raw(broker, modbus)))
    # Generators run over MQTT too (tests/test_mqtt_kinds.py), but never by relay.
    generator = {
        "name": "gen-1",
        "kind": "generator",
        "transport": "mqtt",
        "min_kw": 1,
        "max_kw": 5,
        "ramp_kw_per_s": 1,
        "mqtt_device": {**plug()["mqtt_device"], "command": "relay"},
    }
    with pytest.raises(ConfigError, match="command 'relay' is only for flexible loads"):
        load_site(write_site_file(tmp_path, site_raw(broker, generator)))
    first = plug()
    second = charger(mqtt_device={"state_topic": first["mqtt_device"]["state_topic"]})
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, site_raw(broker, first, second)))
    assert info.value.field == "devices[1] (charger-1).mqtt_device.state_topic"
    assert "already 'plug-1'" in info.value.problem


# --- driver and simulator over the broker ---------------------------------------------------


def test_relay_plug_through_flexedge_sim(tmp_path: Path, broker: PrivateBroker) -> None:
    """`flexedge sim` serves the plug on the site broker; the driver built by the factory
    reads it (consumption negative), sheds it and releases it."""
    site = load_site(write_site_file(tmp_path, site_raw(broker, plug())))
    [config] = site.config.devices
    device = build_device(config, site.maps["plug-1"], mqtt=site.config.mqtt)
    assert isinstance(device, MqttJsonDevice)

    async def scenario() -> None:
        stop, started = asyncio.Event(), asyncio.Event()
        sim = asyncio.create_task(run_sim(site.path, stop=stop, on_started=lambda _: started.set()))
        await asyncio.wait(
            [sim, asyncio.create_task(started.wait())],
            timeout=5,
            return_when=asyncio.FIRST_COMPLETED,
        )
        assert started.is_set(), sim.exception() if sim.done() else "sim did not start"
        try:
            await device.connect()
            reading = await settle(device, near(-2.0))
            assert (reading.soc, reading.setpoint_kw, reading.available) == (None, None, True)
            assert await device.write_heartbeat(1) is False
            await device.write_setpoint(-1.0)  # any cap: the relay opens
            await settle(device, near(-0.5))
            await device.write_setpoint(None)
            await settle(device, near(-2.0))
        finally:
            await device.close()
            stop.set()
            await sim

    run(scenario)


def test_plug_turns_itself_back_on_after_its_lease(broker: PrivateBroker) -> None:
    config = SiteConfig.model_validate(site_raw(broker, plug(setpoint_timeout_s=2)))

    async def scenario() -> None:
        async with simulated(config) as sim, drivers(config) as [device]:
            await settle(device, near(-2.0))
            await device.write_setpoint(-2.0)
            await settle(device, near(-0.5), timeout=1.5)
            assert sim.devices["plug-1"].state()["relay"] == "off"
            # No new command: the plug's own timer switches it on after 2 s.
            await settle(device, near(-2.0), timeout=3.0)
            assert sim.devices["plug-1"].state()["relay"] == "on"

    run(scenario)


def test_limit_load_follows_its_limit_and_release(broker: PrivateBroker) -> None:
    config = SiteConfig.model_validate(site_raw(broker, charger()))

    async def scenario() -> None:
        async with simulated(config) as sim, drivers(config) as [device]:
            model = sim.model("charger-1", LoadModel)
            await settle(device, near(-5.0))
            await device.write_setpoint(-3.0)
            reading = await settle(device, near(-3.0))
            assert model.limit_kw == pytest.approx(3.0)
            # The device echoes its limit: the read-back confirms the write.
            assert reading.setpoint_kw == pytest.approx(-3.0)
            await device.write_setpoint(-0.2)  # below the firm 1 kW: only the firm part
            await settle(device, near(-1.0))
            await device.write_setpoint(None)
            reading = await settle(device, near(-5.0))
            assert model.limit_kw is None and reading.setpoint_kw is None

    run(scenario)


def test_silent_device_goes_stale_and_comes_back(broker: PrivateBroker) -> None:
    config = SiteConfig.model_validate(
        site_raw(broker, charger(mqtt_device={"stale_after_s": 0.5}))
    )

    async def scenario() -> None:
        async with simulated(config) as sim, drivers(config) as [device]:
            await settle(device, near(-5.0))
            sim.devices["charger-1"].silent = True
            exc = await unavailable(device, timeout=2.0)
            assert "stale_after_s 0.5" in str(exc) and device.state_topic in str(exc)
            sim.devices["charger-1"].silent = False
            await settle(device, near(-5.0), timeout=2.0)

    run(scenario)


def test_malformed_state_keeps_the_last_good_one(
    broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A Tasmota-like plug: nested power field in kW, already in the site sign."""
    raw = plug(
        mqtt_device={
            "power_field": "ENERGY.Power",
            "power_unit": "kW",
            "consumption_positive": False,
        }
    )
    config = SiteConfig.model_validate(site_raw(broker, raw))
    topic = raw["mqtt_device"]["state_topic"]
    bad = [
        b"not json",
        b"[1, 2]",
        b'{"ENERGY": {"Power": "1.2"}}',
        b'{"ENERGY": {"P": 1}}',
        b'{"ENERGY": {"Power": true}}',
        b'{"ENERGY": {"Power": NaN}}',
        b"\xff\xfe",
    ]
    caplog.set_level(logging.DEBUG, logger="flexedge.drivers.mqtt_device")

    async def scenario() -> None:
        fake = MqttLink(host=broker.host, port=broker.port, client_id=f"fake-{uuid.uuid4()}")
        await fake.start(wait=5)
        try:
            async with drivers(config) as [device]:
                with pytest.raises(DeviceUnavailable, match=r"no state message .* yet"):
                    await device.read()
                fake.publish(topic, json.dumps({"ENERGY": {"Power": -1.5}}).encode())
                good = await settle(device, near(-1.5))
                for payload in bad:
                    fake.publish(topic, payload)
                await wait_for_async(
                    lambda: len(ignored()) >= len(bad), 3, "every bad state to be ignored"
                )
                assert await device.read() == good
        finally:
            await fake.stop()

    def ignored() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "ignoring state" in r.getMessage()]

    run(scenario)
    # Said once at WARNING, then quietly, so a broken device does not flood the log.
    assert [r.levelno for r in ignored()] == [logging.WARNING] + [logging.DEBUG] * (len(bad) - 1)


def test_retained_state_is_not_taken_as_fresh(
    broker: PrivateBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A retained state may be hours old; only live messages count as telemetry."""
    caplog.set_level(logging.DEBUG, logger="flexedge.drivers.mqtt_links")
    raw = plug()
    config = SiteConfig.model_validate(site_raw(broker, raw))
    topic = raw["mqtt_device"]["state_topic"]

    async def scenario() -> None:
        fake = MqttLink(host=broker.host, port=broker.port, client_id=f"fake-{uuid.uuid4()}")
        await fake.start(wait=5)
        try:
            mid = fake.publish(topic, b'{"power": 1000}', retain=True)
            assert mid is not None and await fake.wait_published(mid, 2)
            async with drivers(config) as [device]:
                await wait_for_async(
                    lambda: "ignoring retained state" in caplog.text,
                    3,
                    "the retained state to arrive on subscribe",
                )
                with pytest.raises(DeviceUnavailable, match="yet"):
                    await device.read()
                fake.publish(topic, b'{"power": 1200}')
                await settle(device, near(-1.2))
        finally:
            await fake.stop(final=(topic, b"", 1, True))  # delete the retained message

    run(scenario)


def test_devices_on_one_broker_share_one_link(broker: PrivateBroker) -> None:
    config = SiteConfig.model_validate(site_raw(broker, plug(), charger()))

    async def scenario() -> None:
        async with simulated(config), drivers(config) as [plug_dev, charger_dev]:
            link = plug_dev.link
            assert link is not None and link is charger_dev.link
            await settle(plug_dev, near(-2.0))
            await settle(charger_dev, near(-5.0))
            await plug_dev.close()
            await plug_dev.close()  # twice is fine
            assert plug_dev.link is None and link.connected
            await charger_dev.write_setpoint(-2.0)
            await settle(charger_dev, near(-2.0))
            await charger_dev.close()
            assert not link.connected  # the last user stopped it
            # Reading reconnects, on a new shared link.
            await settle(charger_dev, near(-2.0))
            assert charger_dev.link is not None and charger_dev.link is not link

    run(scenario)


def test_unreachable_broker_is_device_unavailable(broker: PrivateBroker) -> None:
    device = MqttJsonDevice(
        "plug-x",
        Broker("127.0.0.1", free_port()),
        state_topic="x/state",
        command_topic="x/set",
        command="relay",
        timeout_s=0.3,
    )

    async def scenario() -> None:
        with pytest.raises(DeviceUnavailable, match="plug-x: no CONNACK"):
            await device.connect()
        with pytest.raises(DeviceUnavailable):
            await device.write_setpoint(None)
        await device.close()

    run(scenario)


def test_factory_needs_a_broker_for_site_broker_devices(broker: PrivateBroker) -> None:
    config = SiteConfig.model_validate(site_raw(broker, plug()))
    with pytest.raises(ValueError, match="site broker, but none was given"):
        MqttJsonDevice.from_config(config.devices[0], None)
    site_broker = MqttSettings(host="127.0.0.1", username="site", password=SecretStr("pw"))
    on_site = MqttJsonDevice.from_config(config.devices[0], site_broker)
    assert on_site.broker == Broker("127.0.0.1", 1883, "site", "pw", 30)
    raw = plug(mqtt_device={"host": "10.1.2.3"})
    own = MqttJsonDevice.from_config(
        SiteConfig.model_validate(site_raw(broker, raw)).devices[0], site_broker
    )
    # Another broker gets no site credentials.
    assert own.broker == Broker("10.1.2.3", 1883)
