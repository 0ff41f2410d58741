"""The site file schema. Field names are the YAML keys; defaults are the documented ones."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    model_validator,
)

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = Field(default="flexedge", min_length=1)
    username: str | None = None
    # SecretStr keeps the password out of reprs, logs and error messages.
    password: SecretStr | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)


class BalancingConstants(Strict):
    """The D3A balancing-market constants, lower-cased, with D3A's own defaults, and how
    flexedge delivers what that market buys."""

    enable_balancing_market: bool = False
    balancing_spot_trade_ratio: Ratio = 0.2
    balancing_offer_demand_ratio: Ratio = 0.1
    balancing_offer_supply_ratio: Ratio = 0.1
    balancing_flexible_loads_support: bool = True
    # flexedge's own: what a trade's asset cannot deliver (unavailable, at a limit) is taken
    # up by the other registered assets, cheapest balancing rate first.
    cover_with_other_assets: bool = True


class BalancingRates(Strict):
    """An asset registry entry: (demand balancing rate, supply balancing rate) in ct/kWh."""

    demand_rate_ct_per_kwh: float = Field(ge=0)
    supply_rate_ct_per_kwh: float = Field(ge=0)


class Tariff(Strict):
    """A Power TAC tariff: its assets and the standing balancing order flexedge offers for it."""

    id: Name
    assets: list[Name] = Field(min_length=1)
    # Fixed ratio of the standing order; [-1, 2] per Power TAC's BalancingOrder.
    exercise_ratio: float = Field(ge=-1.0, le=2.0)
    price_per_kwh: float

    @model_validator(mode="after")
    def _nonzero_ratio(self) -> Tariff:
        if self.exercise_ratio == 0:
            raise ValueError("exercise_ratio 0 offers nothing; use a value in [-1, 0) or (0, 2]")
        return self


class SimulatorSettings(Strict):
    """How `flexedge sim` plays this device. Ignored by `flexedge run`."""

    initial_soc: Ratio = 0.5  # batteries
    # Flexible loads: demand noise around the profile, and the share of shed energy drawn
    # back after a release, spread over rebound_s.
    noise_kw: float = Field(default=0.0, ge=0)
    rebound_share: Ratio = 0.0
    rebound_s: float = Field(default=600.0, gt=0)
    seed: int = 0
    # modbus-rtu only: the serial port the simulator opens. The controller opens serial.port,
    # the other end of the line (a null-modem cable, or the other side of a pty pair).
    serial_port: str | None = Field(default=None, min_length=1)


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


class Battery(DeviceBase):
    kind: Literal["battery"] = "battery"
    capacity_kwh: float = Field(gt=0)
    soc_min: Ratio = 0.1
    soc_max: Ratio = 0.95
    # Energy kept back for the site's own needs (backup); never offered or dispatched.
    reserve_soc: Ratio = 0.0
    max_charge_kw: float = Field(gt=0)
    max_discharge_kw: float = Field(gt=0)
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _soc_window(self) -> Battery:
        if not self.soc_min + self.reserve_soc < self.soc_max:
            raise ValueError("soc_min + reserve_soc must be below soc_max")
        return self


ProfilePoint = tuple[Annotated[float, Field(ge=0, lt=86400)], Annotated[float, Field(ge=0)]]


class FlexibleLoad(DeviceBase):
    """A load whose consumption can be capped (continuous limit), shed by a relay, or set
    (a consumption setpoint, as EV chargers and heat pumps with a power input take)."""

    kind: Literal["flexible_load"]
    mqtt_consumption_positive: ClassVar[bool] = True  # smart plugs report what they draw
    # Declared baseline: (second of day, kW drawn) points, linear between them, wrapping at
    # midnight. Also what the simulator draws before noise.
    baseline_profile: list[ProfilePoint] = Field(min_length=1)
    curtailable_share: Ratio
    control: Literal["limit", "relay", "setpoint"] = "limit"
    # What delivery is measured against: the declared profile, or the average of what it
    # really drew over `baseline_window_s` before it was dispatched.
    baseline: Literal["profile", "measured"] = "profile"
    baseline_window_s: float = Field(default=300.0, ge=5, le=86400)
    max_kw: float = Field(gt=0)  # rated consumption; no limit above it is ever written
    # control setpoint only: how much more than its baseline it can be told to draw (the
    # D3A demand offer, downward regulation), and the extra energy its buffer (a thermal
    # store, an energy need still to meet) takes before it is full. 0: it cannot draw more.
    max_extra_kw: float = Field(default=0.0, ge=0)
    extra_buffer_kwh: float = Field(default=0.0, ge=0)

    @property
    def map_name(self) -> str:
        if self.register_map or self.control != "setpoint":
            return super().map_name
        return "flexible_load_setpoint"

    @model_validator(mode="after")
    def _extra_draw(self) -> Self:
        if self.max_extra_kw > 0 and self.control != "setpoint":
            raise ValueError(
                f"max_extra_kw needs control 'setpoint': a {self.control} load can only be "
                "told to draw less"
            )
        if self.max_extra_kw > 0 and self.extra_buffer_kwh <= 0:
            raise ValueError(
                "max_extra_kw needs extra_buffer_kwh > 0: no load can draw more forever"
            )
        if self.control == "setpoint" and self.transport == "mqtt":
            raise ValueError("control 'setpoint' is for Modbus loads (map flexible_load_setpoint)")
        return self


class Generator(DeviceBase):
    kind: Literal["generator"]
    min_kw: float = Field(ge=0)
    max_kw: float = Field(gt=0)
    ramp_kw_per_s: float = Field(gt=0)
    # Output it would run at without balancing (its schedule); 0 = stopped.
    baseline_kw: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _band(self) -> Generator:
        if not self.min_kw < self.max_kw:
            raise ValueError("min_kw must be below max_kw")
        if self.baseline_kw and not self.min_kw <= self.baseline_kw <= self.max_kw:
            raise ValueError("baseline_kw must be 0 (stopped) or within [min_kw, max_kw]")
        return self


def _device_kind(value: object) -> str:
    # Sites written before loads and generators existed have batteries without `kind`.
    if isinstance(value, dict):
        return str(value.get("kind", "battery"))
    return str(getattr(value, "kind", "battery"))


Device = Annotated[
    Annotated[Battery, Tag("battery")]
    | Annotated[FlexibleLoad, Tag("flexible_load")]
    | Annotated[Generator, Tag("generator")],
    Discriminator(
        _device_kind,
        custom_error_type="device_kind",
        custom_error_message="kind must be battery, flexible_load or generator",
    ),
]


class SiteConfig(Strict):
    site: Name
    mqtt: MqttSettings = MqttSettings()
    slot_seconds: int = Field(default=900, ge=10, le=86400)
    control_period_s: float = Field(default=1.0, ge=0.05, le=3600)
    # A delivery counts as delivered when within this share of the accepted energy.
    delivery_tolerance: Ratio = 0.02
    # Where the SQLite log goes; relative paths are relative to the site file.
    log_db: str = "flexedge.sqlite"
    balancing: BalancingConstants = BalancingConstants()
    asset_registry: dict[Name, BalancingRates] = {}
    tariffs: list[Tariff] = []
    devices: list[Device] = Field(min_length=1)

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def registry_rates(self) -> dict[str, tuple[float, float]]:
        """The asset registry as the core takes it: {asset: (demand rate, supply rate)}."""
        return {
            name: (r.demand_rate_ct_per_kwh, r.supply_rate_ct_per_kwh)
            for name, r in self.asset_registry.items()
        }


def reference_problems(config: SiteConfig) -> list[tuple[str, str]]:
    """Cross-references the field types cannot check, as (field path, problem)."""
    problems: list[tuple[str, str]] = []
    names = [d.name for d in config.devices]
    for index, name in enumerate(names):
        if name in names[:index]:
            problems.append((f"devices[{index}].name", f"device name {name!r} is used twice"))
    for asset in config.asset_registry:
        if asset not in names:
            problems.append((f"asset_registry.{asset}", f"{asset!r} is not a device"))
    buses: dict[str, tuple[DeviceBase, set[int]]] = {}
    for index, device in enumerate(config.devices):
        if device.serial is None:
            continue
        # One port is one bus: one speed and format, one simulator end, distinct unit ids.
        where = f"devices[{index}] ({device.name})"
        first, units = buses.setdefault(device.serial.port, (device, set()))
        if first.serial != device.serial:
            problems.append(
                (
                    f"{where}.serial",
                    f"line settings differ from {first.name!r} "
                    f"on the same port {device.serial.port}",
                )
            )
        elif first.simulator.serial_port != device.simulator.serial_port:
            problems.append(
                (f"{where}.simulator.serial_port", f"differs from {first.name!r} on the same port")
            )
        elif device.unit_id in units:
            problems.append(
                (f"{where}.unit_id", f"unit {device.unit_id} is used twice on {device.serial.port}")
            )
        units.add(device.unit_id)
    # Two devices reading one state topic would count the same power twice.
    state_topics: dict[tuple[str | None, int | None, str], str] = {}
    for index, device in enumerate(config.devices):
        md = device.mqtt_device
        if md is None or device.transport != "mqtt":
            continue
        first_name = state_topics.setdefault((md.host, md.port, md.state_topic), device.name)
        if first_name != device.name:
            problems.append(
                (
                    f"devices[{index}] ({device.name}).mqtt_device.state_topic",
                    f"{md.state_topic!r} is already {first_name!r}'s state topic",
                )
            )
    seen: set[str] = set()
    for index, tariff in enumerate(config.tariffs):
        if tariff.id in seen:
            problems.append((f"tariffs[{index}].id", f"tariff id {tariff.id!r} is used twice"))
        seen.add(tariff.id)
        for asset in tariff.assets:
            if asset not in names:
                problems.append(
                    (f"tariffs[{index}] ({tariff.id}).assets", f"{asset!r} is not a device")
                )
    return problems
