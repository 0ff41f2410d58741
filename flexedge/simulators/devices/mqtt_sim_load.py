"""A simulated MQTT smart plug (command "relay") or power-limited load ("limit").

It plays one transport mqtt flexible load of a site file with a LoadModel (its profile,
noise, curtailable share and rebound from the file) and talks the way its mqtt_device section
says: state as a JSON object, e.g. {"power": 1840.0, "relay": "on"} for a plug or
{"power": 5200.0, "limit_w": 3000} for a limited load; commands the relay payloads or
{limit_field: watts or null}. Its lease is setpoint_timeout_s: a plug switched off turns
itself on again after it without a new command (a plug's auto-on timer), a limit lapses.
Malformed commands are logged and change nothing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Literal

from flexedge.config.schema import FlexibleLoad, MqttDeviceSettings
from flexedge.simulators.devices.device_models import load_model_for
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.mqtt_sim_base import Clock, SimulatedMqttDevice, put
from flexedge.simulators.devices.response import NoisyMeter
from flexedge.simulators.devices.sim_clock import utc_offset_s

logger = logging.getLogger(__name__)


class SimulatedMqttLoad(SimulatedMqttDevice):
    """One smart plug or power-limited load, without I/O."""

    def __init__(
        self,
        name: str,
        settings: MqttDeviceSettings,
        command: Literal["relay", "limit"],
        model: LoadModel,
        clock: Clock = time.monotonic,
        meter: NoisyMeter | None = None,
    ) -> None:
        super().__init__(name, settings, clock)
        self.command = command
        self._model = model
        self._meter = meter or NoisyMeter(0.0, 0)

    @classmethod
    def from_config(cls, device: FlexibleLoad, clock: Clock = time.monotonic) -> SimulatedMqttLoad:
        md = device.mqtt_device
        if md is None:
            raise ValueError(f"{device.name}: not an mqtt device")
        if md.command == "setpoint" or device.control == "setpoint":
            raise ValueError(f"{device.name}: an MQTT load takes relay or limit commands")
        # The profile is by second of day UTC, like the controller's baseline (sim_clock).
        model = load_model_for(device, clock(), utc_offset_s(clock))
        meter = NoisyMeter(device.simulator.measurement_noise_kw, device.simulator.seed)
        command = md.command or device.control
        return cls(device.name, md, command, model, clock, meter)

    @property
    def model(self) -> LoadModel:
        return self._model

    def state(self) -> dict[str, object]:
        self._model.advance(self._now())
        s = self.settings
        state: dict[str, object] = {}
        put(state, s.power_field, self._device_power(self._meter.read(self._model.p_kw)))
        limit_kw = self._model.limit_kw
        if self.command == "relay":
            state["relay"] = s.relay_on_payload if limit_kw is None else s.relay_off_payload
        else:
            state[s.limit_field] = None if limit_kw is None else round(limit_kw * 1000.0, 1)
        return state

    def handle_command(self, payload: bytes) -> bool:
        try:
            limit_kw = self._parse(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            logger.warning(
                "%s: ignoring command on %s (%s): %r",
                self.name,
                self.settings.command_topic,
                exc,
                payload[:200],
            )
            return False
        self._model.command_limit(limit_kw, self._now())
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
        if (
            isinstance(limit_w, bool)
            or not isinstance(limit_w, int | float)
            or not math.isfinite(limit_w)
            or limit_w < 0
        ):
            raise ValueError(f"{s.limit_field} must be null or a number >= 0, got {limit_w!r}")
        return float(limit_w) / 1000.0
