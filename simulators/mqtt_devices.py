"""Simulated MQTT JSON devices for `flexedge sim`: a smart plug and a power-limited load.

Each plays one transport mqtt flexible load of a site file with a LoadModel (its profile,
noise, curtailable share and rebound from the file) and talks the way its mqtt_device section
says: state as a JSON object on state_topic every `publish_interval_s` and right after each
accepted command, e.g. {"power": 1840.0, "relay": "on"} for a plug or
{"power": 5200.0, "limit_w": 3000} for a limited load; commands from command_topic. The
device's lease is setpoint_timeout_s: a plug switched off turns itself on again after it
without a new command (a plug's auto-on timer), a limit lapses. Malformed commands are logged
and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from config.schema import FlexibleLoad, MqttDeviceSettings, SiteConfig
from controller.errors import BrokerError
from controller.mqtt import MqttLink
from drivers.mqtt_device import Broker
from simulators.load import LoadModel

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class SimulatedMqttLoad:
    """One smart plug (command "relay") or power-limited load ("limit"), without I/O."""

    def __init__(self, name: str, settings: MqttDeviceSettings,
                 command: Literal["relay", "limit"], model: LoadModel,
                 clock: Clock = time.time) -> None:
        self.name = name
        self.settings = settings
        self.command = command
        self.model = model
        # Wall clock: the load profile is by second of day, like the controller's baseline.
        self.clock = clock
        self._t = clock()
        # True: publishes nothing, like a plug that lost its Wi-Fi (tests, fault drills).
        self.silent = False

    @classmethod
    def from_config(cls, device: FlexibleLoad, clock: Clock = time.time) -> SimulatedMqttLoad:
        if device.mqtt_device is None:
            raise ValueError(f"{device.name}: not an mqtt device")
        sim = device.simulator
        model = LoadModel(profile=device.baseline_profile,
                          curtailable_share=device.curtailable_share, control=device.control,
                          noise_kw=sim.noise_kw, rebound_share=sim.rebound_share,
                          rebound_s=sim.rebound_s, setpoint_timeout_s=device.setpoint_timeout_s,
                          seed=sim.seed, now=clock())
        return cls(device.name, device.mqtt_device, device.mqtt_device.command or device.control,
                   model, clock)

    def _now(self) -> float:
        # LoadModel refuses time going backwards; a wall-clock step back just pauses it.
        self._t = max(self._t, self.clock())
        return self._t

    def state(self) -> dict[str, object]:
        """The state message as the device would publish it now."""
        self.model.advance(self._now())
        s = self.settings
        value = -self.model.p_kw  # kW drawn, >= 0
        if not s.consumption_positive:
            value = -value
        if s.power_unit == "W":
            value *= 1000.0
        state: dict[str, object] = {}
        node = state
        *parents, leaf = s.power_field.split(".")
        for key in parents:
            child: dict[str, object] = {}
            node[key] = child
            node = child
        node[leaf] = round(value, 3)
        limit_kw = self.model.limit_kw
        if self.command == "relay":
            state["relay"] = s.relay_on_payload if limit_kw is None else s.relay_off_payload
        else:
            state[s.limit_field] = None if limit_kw is None else round(limit_kw * 1000.0, 1)
        return state

    def handle_command(self, payload: bytes) -> bool:
        """Apply one command; False (and a log line) if it is malformed."""
        try:
            limit_kw = self._parse(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            logger.warning("%s: ignoring command on %s (%s): %r", self.name,
                           self.settings.command_topic, exc, payload[:200])
            return False
        self.model.command_limit(limit_kw, self._now())
        logger.debug("%s: limit %s kW", self.name, limit_kw)
        return True

    def _parse(self, payload: bytes) -> float | None:
        s = self.settings
        if self.command == "relay":
            # Plugs accept their payloads in any case ("ON", "on").
            text = payload.decode().strip().lower()
            if text == s.relay_on_payload.strip().lower():
                return None
            if text == s.relay_off_payload.strip().lower():
                return 0.0  # any cap below demand opens the relay
            raise ValueError(f"expected {s.relay_on_payload!r} or {s.relay_off_payload!r}")
        message = json.loads(payload)
        if not isinstance(message, dict) or s.limit_field not in message:
            raise ValueError(f"expected a JSON object with {s.limit_field!r}")
        limit_w = message[s.limit_field]
        if limit_w is None:
            return None
        if isinstance(limit_w, bool) or not isinstance(limit_w, int | float) \
                or not math.isfinite(limit_w) or limit_w < 0:
            raise ValueError(f"{s.limit_field} must be null or a number >= 0, got {limit_w!r}")
        return float(limit_w) / 1000.0


class _BrokerGroup:
    """The simulated devices on one broker: one connection, commands routed by topic."""

    def __init__(self, broker: Broker, devices: Iterable[SimulatedMqttLoad],
                 publish_interval_s: float) -> None:
        self.broker = broker
        self.devices = {d.settings.command_topic: d for d in devices}
        self.interval = publish_interval_s
        self.link = MqttLink(host=broker.host, port=broker.port,
                             client_id=f"flexedge-sim-dev-{uuid.uuid4().hex[:8]}",
                             username=broker.username, password=broker.password,
                             keepalive=broker.keepalive)
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
        self._tasks = [asyncio.create_task(self._consume(), name="mqtt-sim-commands"),
                       asyncio.create_task(self._publish_every(), name="mqtt-sim-state")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.link.stop()

    def publish(self, device: SimulatedMqttLoad) -> None:
        if device.silent:
            return
        payload = json.dumps(device.state()).encode()
        # QoS 0: a newer state follows within a second; nothing worth queueing.
        self.link.publish(device.settings.state_topic, payload, qos=0)

    async def _publish_every(self) -> None:
        while True:
            for device in self.devices.values():
                self.publish(device)
            await asyncio.sleep(self.interval)

    async def _consume(self) -> None:
        while True:
            msg = await self.link.inbound.get()
            device = self.devices.get(msg.topic)
            try:
                # Real plugs report their new state at once; the controller reads it back.
                if device is not None and device.handle_command(msg.payload):
                    self.publish(device)
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
    def from_site(cls, config: SiteConfig, *, mqtt: tuple[str, int] | None = None,
                  publish_interval_s: float = 1.0, clock: Clock = time.time,
                  ) -> MqttDeviceSimulator:
        """`mqtt` (HOST, PORT) replaces every device's broker, as --host/--port replace the
        Modbus addresses; otherwise a device is on its mqtt_device.host/port or the site's."""
        site = config.mqtt
        password = site.password.get_secret_value() if site.password else None
        site_broker = Broker(site.host, site.port, site.username, password, site.keepalive_s)
        grouped: dict[Broker, list[SimulatedMqttLoad]] = {}
        for device in config.devices:
            if device.transport != "mqtt" or not isinstance(device, FlexibleLoad):
                continue
            md = device.mqtt_device
            assert md is not None  # the schema requires it for transport mqtt
            if mqtt is not None:
                broker = Broker(*mqtt)
            elif md.host is not None:
                broker = Broker(md.host, md.port or 1883)
            else:
                broker = site_broker
            grouped.setdefault(broker, []).append(SimulatedMqttLoad.from_config(device, clock))
        return cls(_BrokerGroup(b, ds, publish_interval_s) for b, ds in grouped.items())

    @property
    def devices(self) -> Mapping[str, SimulatedMqttLoad]:
        return {name: d for name, (d, _) in self._by_name.items()}

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


async def serve_mqtt_devices(config: SiteConfig, *, mqtt: tuple[str, int] | None = None,
                             publish_interval_s: float = 1.0) -> MqttDeviceSimulator:
    """Build and start the simulator; call `await handle.stop()` when done."""
    simulator = MqttDeviceSimulator.from_site(config, mqtt=mqtt,
                                              publish_interval_s=publish_interval_s)
    try:
        await simulator.start()
    except BrokerError as exc:
        raise BrokerError(f"cannot serve the mqtt devices: {exc}") from exc
    return simulator
