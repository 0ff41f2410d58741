"""Devices that speak JSON over MQTT (transport mqtt): smart plugs, power-limited loads,
batteries and generators.

A device publishes telemetry as a JSON object on its state_topic whenever it likes (every few
seconds, on change); read() returns the latest one instead of asking. Commands go to its
command_topic: a relay load gets the plain-text on/off payloads, a limit load a JSON object
{limit_field: watts}, with null releasing the limit, a battery or generator a JSON object
{setpoint_field: power in power_unit}, site sign (+ discharge or generate). Power in the state
is turned into the site convention by consumption_positive (flexedge.config.schema); a battery's
soc_field is a percentage, read() gives it as a fraction.

Every device on one broker shares one MqttLink (mqtt_links): connect() acquires it,
close() releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flexedge.config.schema import DeviceBase, MqttSettings
from flexedge.drivers.base import Reading
from flexedge.drivers.mqtt_links import SharedLink, acquire, release
from flexedge.errors import BrokerError, DeviceUnavailable
from flexedge.mqtt import Broker, MqttLink

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# How the device is commanded: relay and limit loads, setpoint batteries and generators.
Command = Literal["relay", "limit", "setpoint"]


def _lookup(state: dict[str, object], path: str) -> object:
    node: object = state
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ValueError(f"no field {path!r}")
        node = node[key]
    return node


def _number(value: object, what: str) -> float:
    # bool is an int to Python, but "power": true is not a power.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


@dataclass(frozen=True)
class _State:
    p_kw: float
    soc: float | None  # fraction; None for devices without storage
    echo_kw: float | None  # the device's limit or setpoint as a site-convention setpoint
    ts: float  # wall clock at arrival (Reading.ts)
    arrived: float  # monotonic, for staleness


class MqttJsonDevice:
    """A flexible load behind a smart plug (command "relay") or with a power limit ("limit"),
    or a battery or generator taking a power setpoint ("setpoint"). `soc_field` None: the
    device has no storage (Reading.soc None)."""

    def __init__(
        self,
        name: str,
        broker: Broker,
        *,
        state_topic: str,
        command_topic: str,
        command: Command,
        power_field: str = "power",
        power_unit: Literal["W", "kW"] = "W",
        consumption_positive: bool = True,
        relay_on_payload: str = "on",
        relay_off_payload: str = "off",
        limit_field: str = "limit_w",
        setpoint_field: str = "setpoint_w",
        soc_field: str | None = None,
        stale_after_s: float = 10.0,
        timeout_s: float = 1.0,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._name = name
        self.broker = broker
        self.state_topic = state_topic
        self.command_topic = command_topic
        self.command = command
        self.power_field = power_field
        self._scale = 1.0 if power_unit == "kW" else 0.001
        self._sign = -1.0 if consumption_positive else 1.0
        self.relay_on_payload = relay_on_payload
        self.relay_off_payload = relay_off_payload
        self.limit_field = limit_field
        self.setpoint_field = setpoint_field
        self.soc_field = soc_field
        self.stale_after_s = stale_after_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._shared: SharedLink | None = None
        self._connect_lock = asyncio.Lock()
        self._state: _State | None = None
        self._warned_malformed = False
        self._last_payload: bytes | None = None
        self._command_changed = -math.inf

    @classmethod
    def from_config(cls, device: DeviceBase, site_mqtt: MqttSettings | None) -> MqttJsonDevice:
        """The driver for a site-file device with transport mqtt. `site_mqtt` is the site's
        broker, used unless mqtt_device names another host."""
        md = device.mqtt_device
        if md is None:
            raise ValueError(f"{device.name}: transport mqtt needs an mqtt_device section")
        # The schema refused mismatches; left out, a load follows its control and the
        # others take setpoints.
        command: Command = md.command or getattr(device, "control", None) or "setpoint"
        if md.host is not None and (
            site_mqtt is None or (md.host, md.port or 1883) != (site_mqtt.host, site_mqtt.port)
        ):
            broker = Broker(md.host, md.port or 1883)
        elif site_mqtt is not None:
            # The site broker: its login and TLS, as the daemon's own link has them.
            broker = site_mqtt.broker()
        else:
            raise ValueError(f"{device.name}: uses the site broker, but none was given")
        return cls(
            device.name,
            broker,
            state_topic=md.state_topic,
            command_topic=md.command_topic,
            command=command,
            power_field=md.power_field,
            power_unit=md.power_unit,
            consumption_positive=md.consumption_positive,
            relay_on_payload=md.relay_on_payload,
            relay_off_payload=md.relay_off_payload,
            limit_field=md.limit_field,
            setpoint_field=md.setpoint_field,
            soc_field=md.soc_field if device.kind_name == "battery" else None,
            stale_after_s=md.stale_after_s,
            timeout_s=device.timeout_s,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def link(self) -> MqttLink | None:
        """The shared connection while connected (devices on one broker share it)."""
        return self._shared.link if self._shared is not None else None

    @property
    def endpoint(self) -> str:
        return f"mqtt://{self.broker.host}:{self.broker.port}"

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._shared is not None:
                return
            try:
                shared = await acquire(self.broker, self.timeout_s)
            except BrokerError as exc:
                raise DeviceUnavailable(self._name, str(exc)) from exc
            shared.routes.setdefault(self.state_topic, []).append(self._on_state)
            try:
                # QoS 0: a lost sample is replaced by the next; no backlog after an outage.
                shared.link.subscribe(self.state_topic, qos=0)
                await shared.link.wait_subscribed(self.timeout_s)
            except BaseException as exc:
                self._unroute(shared)
                await release(shared)
                if isinstance(exc, BrokerError):
                    raise DeviceUnavailable(self._name, str(exc)) from exc
                raise
            self._shared = shared
            log.debug(
                "%s: state on %s, commands to %s via %s",
                self._name,
                self.state_topic,
                self.command_topic,
                self.endpoint,
            )

    async def read(self) -> Reading:
        await self._connected()
        state = self._state
        if state is None:
            raise DeviceUnavailable(self._name, f"no state message on {self.state_topic} yet")
        age = self._clock() - state.arrived
        if age > self.stale_after_s:
            raise DeviceUnavailable(
                self._name,
                f"no state message on {self.state_topic} for "
                f"{age:.1f} s (stale_after_s {self.stale_after_s:g})",
            )
        # An echo older than the last change of command cannot show it yet; report none
        # rather than a mismatch the device had no chance to avoid.
        echo = state.echo_kw if state.arrived >= self._command_changed else None
        return Reading(
            asset=self._name,
            ts=state.ts,
            p_kw=state.p_kw,
            soc=state.soc,
            available=True,
            setpoint_kw=echo,
        )

    async def write_setpoint(self, p_kw: float | None) -> None:
        if p_kw is not None and not math.isfinite(p_kw):
            raise ValueError(f"{self._name}: setpoint must be finite, got {p_kw}")
        if p_kw is None and self.command == "setpoint":
            raise ValueError(
                f"{self._name}: a battery or generator needs a setpoint in kW, not None"
            )
        link = await self._connected()
        payload = self._command_payload(p_kw)
        # State that arrives from now on may show this command; older state cannot.
        sent_at = self._clock()
        try:
            mid = link.publish(self.command_topic, payload, qos=1)
        except BrokerError as exc:
            raise DeviceUnavailable(self._name, str(exc)) from exc
        if mid is None:
            raise DeviceUnavailable(self._name, f"lost {self.endpoint}; command not sent")
        if not await link.wait_published(mid, self.timeout_s):
            raise DeviceUnavailable(
                self._name,
                f"{self.endpoint} did not acknowledge the command within {self.timeout_s:g} s",
            )
        if payload != self._last_payload:
            self._last_payload = payload
            self._command_changed = sent_at

    async def configure_lease(self, seconds: float) -> bool:
        # The device's own timer (a plug's auto-on) is set in the device, not over this API;
        # setpoint_timeout_s in the site file states what it is set to.
        return False

    async def write_heartbeat(self, counter: int) -> bool:
        return False  # plugs and chargers have no heartbeat; their own timer is the lease

    async def close(self) -> None:
        async with self._connect_lock:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            # MqttLink cannot unsubscribe; a topic nobody routes any more is just dropped.
            self._unroute(shared)
            await release(shared)

    # -- internals ------------------------------------------------------------------------
    async def _connected(self) -> MqttLink:
        if self._shared is None:
            await self.connect()
        assert self._shared is not None
        link = self._shared.link
        if not link.connected:
            raise DeviceUnavailable(self._name, f"no connection to {self.endpoint}")
        return link

    def _unroute(self, shared: SharedLink) -> None:
        handlers = shared.routes.get(self.state_topic, [])
        with contextlib.suppress(ValueError):
            handlers.remove(self._on_state)
        if not handlers:
            shared.routes.pop(self.state_topic, None)

    def _command_payload(self, p_kw: float | None) -> bytes:
        if self.command == "setpoint":
            assert p_kw is not None  # write_setpoint refused None
            # Whole watts, or kW to the watt: finer than any inverter takes.
            value = round(p_kw, 3) if self._scale == 1.0 else round(p_kw * 1000.0)
            return json.dumps({self.setpoint_field: value + 0}).encode()
        if self.command == "relay":
            # Any cap sheds the relay's load; only a release switches it back on.
            return (self.relay_on_payload if p_kw is None else self.relay_off_payload).encode()
        # The cap is -p_kw of consumption; a positive p_kw asks for more than shedding all.
        limit_w = None if p_kw is None else round(max(0.0, -p_kw) * 1000.0)
        return json.dumps({self.limit_field: limit_w}).encode()

    def _on_state(self, payload: bytes) -> None:
        try:
            state = json.loads(payload)
            if not isinstance(state, dict):
                raise ValueError(f"expected a JSON object, got {type(state).__name__}")
            power = _number(_lookup(state, self.power_field), self.power_field)
            soc = self._soc(state)
            echo = self._echo_kw(state)
        except (UnicodeDecodeError, ValueError) as exc:
            # Every second from a broken device: say it once, until it sends a good one.
            level = logging.DEBUG if self._warned_malformed else logging.WARNING
            log.log(
                level,
                "%s: ignoring state on %s (%s): %r",
                self._name,
                self.state_topic,
                exc,
                payload[:200],
            )
            self._warned_malformed = True
            return
        self._warned_malformed = False
        # + 0.0: a plug drawing nothing reads 0.0, not -0.0.
        self._state = _State(
            p_kw=self._sign * power * self._scale + 0.0,
            soc=soc,
            echo_kw=echo,
            ts=self._wall_clock(),
            arrived=self._clock(),
        )

    def _soc(self, state: dict[str, object]) -> float | None:
        """The state of charge as a fraction. A battery state without it is malformed: a
        battery whose charge is unknown cannot be offered or dispatched."""
        if self.soc_field is None:
            return None
        percent = _number(_lookup(state, self.soc_field), self.soc_field)
        if not 0.0 <= percent <= 100.0:
            raise ValueError(f"{self.soc_field} is {percent!r}, not a percentage 0..100")
        return percent / 100.0

    def _echo_kw(self, state: dict[str, object]) -> float | None:
        """The limit or setpoint the device reports, as the setpoint that would have written
        it. A relay's on/off cannot be turned back into the kW written, so relays confirm
        nothing; a missing or unreadable echo confirms nothing either."""
        if self.command == "relay":
            return None
        field = self.limit_field if self.command == "limit" else self.setpoint_field
        value = state.get(field)
        if value is None:
            return None
        try:
            number = _number(value, field)
        except ValueError:
            return None
        # A limit is watts of consumption; a setpoint is already site-signed, in power_unit.
        return -number / 1000.0 if self.command == "limit" else number * self._scale + 0.0
