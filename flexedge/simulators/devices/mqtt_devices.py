"""Simulated MQTT JSON devices for `flexedge sim`: every transport mqtt device of a site.

Flexible loads are smart plugs or power-limited loads (mqtt_sim_load), batteries
and generators take power setpoints (mqtt_sim_setpoint). Each publishes its state
as a JSON object on state_topic every `publish_interval_s` and right after each command it
takes, and takes commands from command_topic. The devices on one broker share one
connection.

Faults (faults, switched with faults(name), or over MQTT by
fault_mqtt) mean here what mqtt_sim_base says: drop silences the
device, latency_s delays its state messages and its commands by that much each way (so a
command's effect shows after twice the latency), frozen repeats the state of the moment it
started, ignore_writes drops commands, exception is refused.

Usage::

    sim = await serve_mqtt_devices(config)
    sim.model("battery-1", BatteryModel).soc
    sim.faults("battery-1").latency_s = 0.5
    await sim.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TypeVar, overload

from flexedge.config.schema import Battery, Device, FlexibleLoad, Generator, SiteConfig
from flexedge.errors import BrokerError
from flexedge.mqtt import Broker, MqttLink
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.device_models import SimModel
from flexedge.simulators.devices.faults import DeviceFaults
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.mqtt_sim_base import Clock, SimulatedMqttDevice
from flexedge.simulators.devices.mqtt_sim_load import SimulatedMqttLoad
from flexedge.simulators.devices.mqtt_sim_setpoint import (
    SimulatedMqttBattery,
    SimulatedMqttGenerator,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MqttDeviceSimulator",
    "SimulatedMqttBattery",
    "SimulatedMqttDevice",
    "SimulatedMqttGenerator",
    "SimulatedMqttLoad",
    "serve_mqtt_devices",
    "simulated_device",
]

M = TypeVar("M", BatteryModel, LoadModel, GeneratorModel)
Action = Callable[[], None]


def simulated_device(device: Device, clock: Clock = time.monotonic) -> SimulatedMqttDevice:
    """The simulated MQTT device for a transport mqtt device of a site file."""
    if isinstance(device, FlexibleLoad):
        return SimulatedMqttLoad.from_config(device, clock)
    if isinstance(device, Battery):
        return SimulatedMqttBattery.from_config(device, clock)
    if isinstance(device, Generator):
        return SimulatedMqttGenerator.from_config(device, clock)
    raise ValueError(f"{device.name}: no MQTT simulator for kind {device.kind_name!r}")


class _DelayLine:
    """One device's way to and from the broker under the latency fault: actions run in the
    order they were queued, each `delay` after it was queued (a later, shorter delay waits
    for the earlier ones, as on one connection); without delay and with nothing on its way,
    at once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: asyncio.Queue[tuple[float, Action]] = asyncio.Queue()
        self._pending = 0
        self._last_due = -math.inf

    def put(self, delay: float, action: Action) -> None:
        if delay <= 0 and self._pending == 0:
            action()
            return
        due = max(asyncio.get_running_loop().time() + delay, self._last_due)
        self._last_due = due
        self._pending += 1
        self._queue.put_nowait((due, action))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, action = await self._queue.get()
            try:
                await asyncio.sleep(max(0.0, due - loop.time()))
                action()
            except Exception:
                logger.exception("%s: delayed message failed", self.name)
            finally:
                self._pending -= 1


class _BrokerGroup:
    """The simulated devices on one broker: one connection, commands routed by topic."""

    def __init__(
        self, broker: Broker, devices: Iterable[SimulatedMqttDevice], publish_interval_s: float
    ) -> None:
        self.broker = broker
        self.devices = {d.settings.command_topic: d for d in devices}
        self._lines = {d.name: _DelayLine(d.name) for d in self.devices.values()}
        self.interval = publish_interval_s
        self.link = MqttLink.for_broker(
            broker, client_id=f"flexedge-sim-dev-{uuid.uuid4().hex[:8]}"
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, wait: float) -> None:
        await self.link.start(wait=wait)
        try:
            for topic in self.devices:
                self.link.subscribe(topic, qos=1)
            await self.link.wait_subscribed(wait)
        except BaseException:
            await self.link.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._consume(), name="mqtt-sim-commands"),
            asyncio.create_task(self._publish_every(), name="mqtt-sim-state"),
        ]
        self._tasks += [
            asyncio.create_task(line.run(), name=f"mqtt-sim-delay-{name}")
            for name, line in self._lines.items()
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.link.stop()

    def publish(self, device: SimulatedMqttDevice) -> None:
        if not device.publishing:
            return
        # The state of now, delivered after the latency: what arrives is that old.
        payload = json.dumps(device.published_state()).encode()
        self._lines[device.name].put(device.faults.latency_s, partial(self._send, device, payload))

    def _send(self, device: SimulatedMqttDevice, payload: bytes) -> None:
        # A drop switched on while the message was on its way loses it.
        if device.publishing:
            # QoS 0: a newer state follows within a second; nothing worth queueing.
            self.link.publish(device.settings.state_topic, payload, qos=0)

    def _command(self, device: SimulatedMqttDevice, payload: bytes) -> None:
        # Real devices report their new state at once; the controller reads it back.
        if device.receive(payload):
            self.publish(device)

    async def _publish_every(self) -> None:
        while True:
            for device in self.devices.values():
                try:
                    self.publish(device)
                except Exception:
                    # One broken device must not silence the others for the rest of the run.
                    logger.exception("%s: state not published", device.name)
            await asyncio.sleep(self.interval)

    async def _consume(self) -> None:
        while True:
            msg = await self.link.inbound.get()
            device = self.devices.get(msg.topic)
            try:
                # A command sent while the device is offline is lost, even if it comes back
                # before the latency would have delivered it.
                if device is not None and not device.faults.drop:
                    self._lines[device.name].put(
                        device.faults.latency_s, partial(self._command, device, msg.payload)
                    )
            except Exception:
                logger.exception("command on %s failed", msg.topic)
            finally:
                self.link.ack(msg)


class MqttDeviceSimulator:
    """Every transport mqtt device of a site, one MqttLink per broker."""

    def __init__(self, groups: Iterable[_BrokerGroup]) -> None:
        self.groups = tuple(groups)
        self._by_name = {d.name: (d, g) for g in self.groups for d in g.devices.values()}

    @classmethod
    def from_site(
        cls,
        config: SiteConfig,
        *,
        mqtt: tuple[str, int] | None = None,
        publish_interval_s: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> MqttDeviceSimulator:
        """`mqtt` (HOST, PORT) replaces every device's broker, as --host/--port replace the
        Modbus addresses; otherwise a device is on its mqtt_device.host/port or the site's."""
        site = config.mqtt
        site_broker = site.broker()
        grouped: dict[Broker, list[SimulatedMqttDevice]] = {}
        for device in config.devices:
            if device.transport != "mqtt":
                continue
            md = device.mqtt_device
            assert md is not None  # the schema requires it for transport mqtt
            if mqtt is not None:
                # Another address for the site broker: its credentials still apply.
                broker = dataclasses.replace(site_broker, host=mqtt[0], port=mqtt[1])
            elif md.host is not None:
                broker = Broker(md.host, md.port or 1883)
            else:
                broker = site_broker
            grouped.setdefault(broker, []).append(simulated_device(device, clock))
        return cls(_BrokerGroup(b, ds, publish_interval_s) for b, ds in grouped.items())

    @property
    def devices(self) -> Mapping[str, SimulatedMqttDevice]:
        return {name: d for name, (d, _) in self._by_name.items()}

    @overload
    def model(self, device: str) -> SimModel: ...

    @overload
    def model(self, device: str, kind: type[M]) -> M: ...

    def model(self, device: str, kind: type[M] | None = None) -> SimModel:
        """The device's physics model; with `kind` checked to be of it, for typed access."""
        model = self._by_name[device][0].model
        if kind is not None and not isinstance(model, kind):
            raise TypeError(
                f"{device} is simulated by a {type(model).__name__}, not a {kind.__name__}"
            )
        return model

    def faults(self, device: str) -> DeviceFaults:
        """The device's faults, switchable while running (call on the simulator's loop)."""
        return self._by_name[device][0].faults

    def address(self, name: str) -> tuple[str, int]:
        broker = self._by_name[name][1].broker
        return broker.host, broker.port

    async def start(self, wait: float = 10.0) -> None:
        """Connect to every broker; raises BrokerError (after stopping the others) if one
        cannot be reached."""
        started: list[_BrokerGroup] = []
        try:
            for group in self.groups:
                await group.start(wait)
                started.append(group)
        except BaseException:
            for group in started:
                await group.stop()
            raise

    async def stop(self) -> None:
        for group in self.groups:
            await group.stop()


async def serve_mqtt_devices(
    config: SiteConfig, *, mqtt: tuple[str, int] | None = None, publish_interval_s: float = 1.0
) -> MqttDeviceSimulator:
    """Build and start the simulator; call `await handle.stop()` when done."""
    simulator = MqttDeviceSimulator.from_site(
        config, mqtt=mqtt, publish_interval_s=publish_interval_s
    )
    try:
        await simulator.start()
    except BrokerError as exc:
        raise BrokerError(f"cannot serve the mqtt devices: {exc}") from exc
    return simulator
