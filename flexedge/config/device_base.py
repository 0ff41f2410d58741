"""What every device entry of the site file has: its transport, lease and simulator settings,
and the checks that keep one transport's fields out of another's."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from flexedge.config.field_types import Name, Ratio, Strict
from flexedge.config.transports import MqttDeviceSettings, SerialSettings


class SimulatorSettings(Strict):
    """How `flexedge sim` plays this device. Ignored by `flexedge run`."""

    initial_soc: Ratio = 0.5  # batteries
    # Flexible loads: demand noise around the profile, and the share of shed energy drawn
    # back after a release, spread over rebound_s.
    noise_kw: float = Field(default=0.0, ge=0)
    rebound_share: Ratio = 0.0
    rebound_s: float = Field(default=600.0, gt=0)
    seed: int = 0
    # How the device follows a setpoint or a command, as hardware does (0 and None: at once):
    # a response delay, a ramp and a first-order lag (batteries and loads: what a load draws
    # away from its demand follows them; a generator's ramp here, when set, replaces its
    # declared one, and it has no lag); and noise on the power it reports (the meter's, not
    # the physics': what is delivered follows the device's trajectory).
    response_delay_s: float = Field(default=0.0, ge=0, le=60)
    ramp_kw_per_s: float | None = Field(default=None, gt=0, le=1e6)
    lag_s: float = Field(default=0.0, ge=0, le=3600)
    measurement_noise_kw: float = Field(default=0.0, ge=0, le=1000)
    # modbus-rtu only: the serial port the simulator opens. The controller opens serial.port,
    # the other end of the line (a null-modem cable, or the other side of a pty pair).
    serial_port: str | None = Field(default=None, min_length=1)


class ResponseSettings(Strict):
    """How the device follows a setpoint, as `flexedge prequalify --write` measured it (or
    its data sheet says): dispatch starts it on a commitment, and lets it go, this much ahead
    of the window's edges. 0 and None: at once (a generator's ramp is then its declared one)."""

    delay_s: float = Field(default=0.0, ge=0, le=60)
    ramp_kw_per_s: float | None = Field(default=None, gt=0, le=1e6)


class DeviceBase(Strict):
    """Transport and lease settings every device kind shares."""

    name: Name
    transport: Literal["modbus-tcp", "modbus-rtu", "mqtt"] = "modbus-tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)
    serial: SerialSettings | None = None  # required for modbus-rtu, refused for modbus-tcp
    mqtt_device: MqttDeviceSettings | None = None  # required for mqtt, refused otherwise
    register_map: str = ""  # empty: the kind's generic bundled map
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    # Device-side lease: it reverts to its safe state if no setpoint arrives for this long.
    setpoint_timeout_s: int = Field(default=10, ge=1, le=3600)
    simulator: SimulatorSettings = SimulatorSettings()
    response: ResponseSettings = ResponseSettings()
    # mqtt_device.consumption_positive when the site file leaves it out: batteries and
    # generators report injection positive, the site convention (FlexibleLoad overrides).
    mqtt_consumption_positive: ClassVar[bool] = False

    @property
    def map_name(self) -> str:
        return self.register_map or f"{self.kind_name}_generic"

    @property
    def kind_name(self) -> str:
        return str(getattr(self, "kind", "battery"))

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: object) -> object:
        """Fill in the kind's mqtt_device.consumption_positive where it was left out: one
        default for every kind would read every battery's discharge as a charge, or every
        plug's draw as generation."""
        if not isinstance(data, dict):
            return data
        md = data.get("mqtt_device")
        default = {"consumption_positive": cls.mqtt_consumption_positive}
        if isinstance(md, dict) and "consumption_positive" not in md:
            return {**data, "mqtt_device": {**md, **default}}
        if isinstance(md, MqttDeviceSettings) and "consumption_positive" not in md.model_fields_set:
            return {**data, "mqtt_device": md.model_copy(update=default)}
        return data

    @model_validator(mode="after")
    def _transport_fields(self) -> Self:
        """Fields of the other transport are refused rather than silently ignored."""
        if self.transport == "mqtt":
            return self._mqtt_fields()
        if self.mqtt_device is not None:
            raise ValueError("mqtt_device is only for transport mqtt")
        if self.transport == "modbus-tcp":
            if self.serial is not None:
                raise ValueError(
                    "serial is only for transport modbus-rtu; modbus-tcp uses host and port"
                )
            if self.simulator.serial_port is not None:
                raise ValueError("simulator.serial_port is only for transport modbus-rtu")
            return self
        if self.serial is None:
            raise ValueError("transport modbus-rtu needs a serial section (port, baudrate, ...)")
        if {"host", "port"} & self.model_fields_set:
            raise ValueError("host and port are for modbus-tcp; modbus-rtu uses serial.port")
        if self.unit_id == 0:
            raise ValueError(
                "unit_id 0 is the broadcast address on a serial bus: "
                "no device answers it; use 1..247"
            )
        return self

    def _mqtt_fields(self) -> Self:
        if self.mqtt_device is None:
            raise ValueError(
                "transport mqtt needs an mqtt_device section (state_topic, command_topic, ...)"
            )
        modbus_only = {"host", "port", "serial", "unit_id", "register_map"} & self.model_fields_set
        if modbus_only:
            raise ValueError(
                f"{', '.join(sorted(modbus_only))} only apply to Modbus; transport "
                "mqtt uses mqtt_device.host/port or the site broker"
            )
        if self.simulator.serial_port is not None:
            raise ValueError("simulator.serial_port is only for transport modbus-rtu")
        md = self.mqtt_device
        control = getattr(self, "control", None)
        if control is None:
            return self._mqtt_setpoint_fields(md)
        if md.command == "setpoint":
            raise ValueError(
                f"mqtt_device.command 'setpoint' is for batteries and generators; "
                f"a flexible load takes its control {control!r}; leave command "
                "out to follow control"
            )
        if md.command is not None and md.command != control:
            # The controller plans with `control`; a device commanded otherwise would not
            # deliver what was offered.
            raise ValueError(
                f"mqtt_device.command {md.command!r} differs from control "
                f"{control!r}; leave command out to follow control"
            )
        _refuse_set(md, {"setpoint_field", "soc_field"}, "batteries and generators")
        return self

    def _mqtt_setpoint_fields(self, md: MqttDeviceSettings) -> Self:
        """A battery or generator over MQTT: commanded by setpoint, never relay or limit."""
        if md.command not in (None, "setpoint"):
            # relay and limit turn a cap into a command; a battery or generator is given the
            # power itself, so either would silently drop the sign and the amount.
            raise ValueError(
                f"mqtt_device.command {md.command!r} is only for flexible loads; "
                f"a {self.kind_name} takes command 'setpoint' (or leave command "
                "out)"
            )
        _refuse_set(
            md,
            {"relay_on_payload", "relay_off_payload", "limit_field"},
            "flexible loads (command relay or limit)",
        )
        fields = {"power_field": md.power_field, "setpoint_field": md.setpoint_field}
        if self.kind_name == "battery":
            fields["soc_field"] = md.soc_field
        else:
            _refuse_set(md, {"soc_field"}, "batteries")
        named = sorted(fields.items())
        for index, (name, path) in enumerate(named):
            for other, other_path in named[index + 1 :]:
                # One place in the state cannot hold two values (nor a value and an object):
                # equal paths, or one inside the other.
                a, b = f"{path}.", f"{other_path}."
                if a.startswith(b) or b.startswith(a):
                    raise ValueError(
                        f"mqtt_device.{name} {path!r} and {other} {other_path!r} "
                        "name the same place in the state message"
                    )
        return self


def _refuse_set(md: MqttDeviceSettings, fields: set[str], only_for: str) -> None:
    """Refuse mqtt_device keys the site file sets for a kind that would ignore them."""
    given = sorted(fields & md.model_fields_set)
    if given:
        names = ", ".join(f"mqtt_device.{name}" for name in given)
        raise ValueError(f"{names} only apply to {only_for}")
