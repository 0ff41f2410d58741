"""Simulated MQTT batteries and generators: devices that take a power setpoint.

Each plays one transport mqtt battery or generator of a site file with the model the Modbus
simulator uses (behind the same device_models adapter, so both transports show the
same setpoint and lease) and talks the way its mqtt_device section says. State, e.g. for a
battery with the default fields:

    {"power": 2000.0, "soc": 49.862, "setpoint_w": 2000.0}

power in power_unit and the device's sign (consumption_positive), soc in percent (batteries
only), the setpoint as written in power_unit, site sign, or the fallback once the lease has
run out. Commands: {setpoint_field: number in power_unit, site sign}. The lease is
setpoint_timeout_s, as for the Modbus simulator: without a new command a battery goes to 0,
a generator ramps down and stops. Malformed commands are logged and change nothing.
"""

from __future__ import annotations

import json
import logging
import math
import time

from flexedge.config.schema import Battery, Generator, MqttDeviceSettings
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.device_models import BatteryAdapter, GeneratorAdapter, adapter_for
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.mqtt_sim_base import Clock, SimulatedMqttDevice, put

logger = logging.getLogger(__name__)


class SimulatedMqttSetpointDevice(SimulatedMqttDevice):
    """A battery or generator, without I/O, through its kind's model adapter."""

    def __init__(
        self,
        name: str,
        settings: MqttDeviceSettings,
        adapter: BatteryAdapter | GeneratorAdapter,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(name, settings, clock)
        self.adapter = adapter
        self._readers = adapter.readers()
        self._unit_kw = 1.0 if settings.power_unit == "kW" else 0.001

    def state(self) -> dict[str, object]:
        self.adapter.advance(self._now())
        s = self.settings
        state: dict[str, object] = {}
        put(state, s.power_field, self._device_power(self._readers["power"]()))
        if "soc" in self._readers:
            put(state, s.soc_field, round(self._readers["soc"]() * 100.0, 3))
        setpoint = self._readers["power_setpoint"]() / self._unit_kw
        state[s.setpoint_field] = round(setpoint, 3) + 0.0
        return state

    def handle_command(self, payload: bytes) -> bool:
        try:
            setpoint_kw = self._parse(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            logger.warning(
                "%s: ignoring command on %s (%s): %r",
                self.name,
                self.settings.command_topic,
                exc,
                payload[:200],
            )
            return False
        now = self._now()
        # Advance first: the old setpoint governs the time up to the command.
        self.adapter.advance(now)
        self.adapter.apply("power_setpoint", setpoint_kw, now)
        logger.debug("%s: setpoint %s kW", self.name, setpoint_kw)
        return True

    def _parse(self, payload: bytes) -> float:
        field = self.settings.setpoint_field
        message = json.loads(payload)
        if not isinstance(message, dict) or field not in message:
            raise ValueError(f"expected a JSON object with {field!r}")
        value = message[field]
        # Unlike a load's limit there is no "release": null is as malformed as a string.
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{field} must be a finite number, got {value!r}")
        return float(value) * self._unit_kw


class SimulatedMqttBattery(SimulatedMqttSetpointDevice):
    """A battery over MQTT JSON: power, SoC in percent and its setpoint in every state."""

    adapter: BatteryAdapter

    @classmethod
    def from_config(cls, device: Battery, clock: Clock = time.monotonic) -> SimulatedMqttBattery:
        if device.mqtt_device is None:
            raise ValueError(f"{device.name}: not an mqtt device")
        # adapter_for: the same model, and the same power stage, as the Modbus simulator's.
        adapter = adapter_for(device, now=clock())
        assert isinstance(adapter, BatteryAdapter)
        return cls(device.name, device.mqtt_device, adapter, clock)

    @property
    def model(self) -> BatteryModel:
        return self.adapter.model


class SimulatedMqttGenerator(SimulatedMqttSetpointDevice):
    """A generator over MQTT JSON: power and its setpoint in every state."""

    adapter: GeneratorAdapter

    @classmethod
    def from_config(
        cls, device: Generator, clock: Clock = time.monotonic
    ) -> SimulatedMqttGenerator:
        if device.mqtt_device is None:
            raise ValueError(f"{device.name}: not an mqtt device")
        # adapter_for: the same model and fallback (stop) as the Modbus simulator's.
        adapter = adapter_for(device, now=clock())
        assert isinstance(adapter, GeneratorAdapter)
        return cls(device.name, device.mqtt_device, adapter, clock)

    @property
    def model(self) -> GeneratorModel:
        return self.adapter.model
