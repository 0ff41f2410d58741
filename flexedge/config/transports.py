"""A device's transport sections in the site file: `serial` (modbus-rtu) and `mqtt_device`
(transport mqtt)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from flexedge.config.field_types import Strict


class SerialSettings(Strict):
    """The controller's end of a serial line (modbus-rtu). Devices on one port share it."""

    port: str = Field(min_length=1)  # e.g. /dev/ttyUSB0
    baudrate: int = Field(default=9600, ge=300, le=921600)
    # RTU frames are 8-bit; 7 data bits only exist for Modbus ASCII.
    bytesize: Literal[8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


def _exact_topic(topic: str) -> str:
    # Devices publish to and listen on one topic each; a wildcard could not be published to
    # and would mix the telemetry of several devices into one.
    if any(c in topic for c in "+#\x00"):
        raise ValueError("must be one exact topic: no wildcards (+, #)")
    return topic


Topic = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_exact_topic)]
JsonPath = Annotated[str, Field(pattern=r"^[^.]+(\.[^.]+)*$")]  # dotted keys, e.g. ENERGY.Power


class MqttDeviceSettings(Strict):
    """A device speaking JSON over MQTT (transport mqtt): a smart plug, a charger, a battery
    or a generator behind a JSON gateway.

    It publishes telemetry as a JSON object on state_topic and takes commands on
    command_topic: relay loads the plain-text on/off payloads, limit loads a JSON object
    {limit_field: watts} with null releasing the limit, batteries and generators (command
    setpoint) a JSON object {setpoint_field: power in power_unit}, site sign (+ discharge or
    generate), which they report back in their state. A battery also reports soc_field.
    """

    state_topic: Topic
    command_topic: Topic
    power_field: JsonPath = "power"
    power_unit: Literal["W", "kW"] = "W"
    # The sign the device gives consumption (load, charge). True: consumption is positive, as
    # smart plugs report what they draw, and the driver negates it into the site convention
    # (consumption < 0). False: the device already reports in the site convention (injection
    # positive), as batteries and generators do. Left out of a site file it follows the kind:
    # True for flexible loads, False for batteries and generators (DeviceBase). It applies to
    # power_field only; setpoints are always in the site convention.
    consumption_positive: bool = True
    # None: the kind's own, a load's control (relay or limit), setpoint for the others.
    command: Literal["relay", "limit", "setpoint"] | None = None
    relay_on_payload: str = Field(default="on", min_length=1)
    relay_off_payload: str = Field(default="off", min_length=1)
    limit_field: str = Field(default="limit_w", min_length=1)  # W, in commands and state
    # Batteries and generators: the setpoint key, in power_unit, in commands and state.
    setpoint_field: str = Field(default="setpoint_w", min_length=1)
    soc_field: JsonPath = "soc"  # batteries: state of charge in percent (0..100)
    # Another broker than the site's (no credentials then); None: the site broker.
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    # No state message for this long: the device counts as unavailable. Keep it above the
    # device's telemetry period.
    stale_after_s: float = Field(default=10.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.port is not None and self.host is None:
            raise ValueError(
                "mqtt_device.port needs mqtt_device.host (without host the site broker is used)"
            )
        if self.relay_on_payload.strip() == self.relay_off_payload.strip():
            raise ValueError("mqtt_device.relay_on_payload and relay_off_payload must differ")
        return self
