"""Switch simulator faults over MQTT: the simulator side of `flexedge sim --mqtt HOST:PORT`.

Subscribes to flexedge-sim/{site}/fault/+ and applies each JSON object it receives to the
device named by the last topic level, e.g. {"latency_s": 0.5} or {"clear": true, "drop": true}
(keys in faults). A message that is not valid JSON, names an unknown device or
holds a bad key or value is logged and changes nothing. The faults of every device are
published, retained, to flexedge-sim/{site}/fault-state/{device}: on connect, after every
accepted message (also one that changed nothing, as a confirmation for `flexedge fault`) and
after changes made in-process. They are removed on stop, so a retained state always
describes a running simulator.

The devices are those of the SiteSimulator (Modbus) and, when given, the MqttDeviceSimulator
(transport mqtt devices), so one site's faults are switched the same way whatever the
transport. A fault a device cannot have (a Modbus exception on an MQTT device) is refused
like any bad value: logged, nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

from flexedge.mqtt import Broker, Inbound, MqttLink
from flexedge.simulators.devices.faults import (
    TOPIC_ROOT,
    DeviceFaults,
    FaultError,
    FaultState,
    Listener,
    command_topic,
    state_topic,
)
from flexedge.simulators.devices.modbus_server import SiteSimulator
from flexedge.simulators.devices.mqtt_devices import MqttDeviceSimulator

logger = logging.getLogger(__name__)


class FaultControl:
    """One MQTT connection that lets others switch the faults of a running SiteSimulator
    and, if given, of the site's simulated MQTT devices."""

    def __init__(
        self,
        simulator: SiteSimulator,
        site: str,
        broker: Broker,
        *,
        mqtt_devices: MqttDeviceSimulator | None = None,
    ) -> None:
        self.simulator = simulator
        self.mqtt_devices = mqtt_devices
        self.site = site
        self._faults: dict[str, DeviceFaults] = {
            name: simulator.faults(name) for name in simulator.models
        }
        if mqtt_devices is not None:
            self._faults.update((name, mqtt_devices.faults(name)) for name in mqtt_devices.devices)
        self._devices = tuple(self._faults)
        self._prefix = command_topic(site, "")
        self._link = MqttLink.for_broker(
            broker,
            client_id=f"{TOPIC_ROOT}-{site}-{uuid.uuid4().hex[:8]}",
            on_connect=self._publish_all,
        )
        self._listeners: dict[str, Listener] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_refusal = ""

    async def start(self, wait: float = 10.0) -> None:
        """Connect and subscribe; return once fault messages are being received.
        Raises flexedge.errors.BrokerError when the broker cannot be reached."""
        await self._link.start(wait=wait)
        try:
            self._link.subscribe(f"{self._prefix}+", qos=1)
            await self._link.wait_subscribed(wait)
        except BaseException:
            await self._link.stop()
            raise
        for name in self._devices:
            listener = self._state_publisher(name)
            self._listeners[name] = listener
            self._faults[name].add_listener(listener)
        self._task = asyncio.create_task(self._consume(), name="fault-control")
        logger.info(
            "fault control on mqtt %s:%s, topics %s+",
            self._link.host,
            self._link.port,
            self._prefix,
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name, listener in self._listeners.items():
            self._faults[name].remove_listener(listener)
        self._listeners.clear()
        # An empty retained payload deletes the retained state. QoS 1 acks come back in
        # order, so waiting for the last one (stop's `final`) covers the others.
        topics = [state_topic(self.site, name) for name in self._devices]
        for topic in topics[:-1]:
            self._link.publish(topic, b"", qos=1, retain=True)
        await self._link.stop(final=(topics[-1], b"", 1, True) if topics else None)

    def handle(self, topic: str, payload: bytes) -> FaultState | None:
        """Apply one fault message; the device's new state, or None if it was refused."""
        device = topic.removeprefix(self._prefix)
        if not topic.startswith(self._prefix) or device not in self._devices:
            self._refuse(device, f"no device {device!r} here (devices: {', '.join(self._devices)})")
            return None
        try:
            message = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._refuse(device, f"not JSON ({exc})")
            return None
        if not isinstance(message, dict):
            self._refuse(device, f"expected a JSON object, got {message!r}")
            return None
        try:
            return self._faults[device].apply(message)
        except FaultError as exc:
            self._refuse(device, str(exc))
            return None

    def _refuse(self, device: str, reason: str) -> None:
        logger.warning("fault message for %s ignored: %s", device, reason)
        self._last_refusal = reason

    def _answer(self, msg: Inbound, state: FaultState | None) -> None:
        """MQTT v5 request/response: a sender that gave a response topic hears back the
        device's new state or why its message was refused, matched by correlation data."""
        if msg.response_topic is None:
            return
        body = state.to_json() if state is not None else {"error": self._last_refusal}
        self._link.publish(
            msg.response_topic,
            json.dumps(body).encode(),
            qos=1,
            correlation_data=msg.correlation_data,
        )

    async def _consume(self) -> None:
        while True:
            msg: Inbound = await self._link.inbound.get()
            try:
                self._last_refusal = "refused"
                self._answer(msg, self.handle(msg.topic, msg.payload))
            except Exception:
                # A failing listener must not end fault control for the rest of the run.
                logger.exception("fault message on %s failed", msg.topic)
            finally:
                # Nothing to persist: a command lost with the simulator is moot.
                self._link.ack(msg)

    def _state_publisher(self, device: str) -> Listener:
        def publish(_before: FaultState, after: FaultState) -> None:
            self._publish(device, after)

        return publish

    def _publish(self, device: str, state: FaultState) -> None:
        payload = json.dumps(state.to_json()).encode()
        # None while disconnected: on_connect publishes every state again.
        self._link.publish(state_topic(self.site, device), payload, qos=1, retain=True)

    def _publish_all(self) -> None:
        for name in self._devices:
            self._publish(name, self._faults[name].state)
