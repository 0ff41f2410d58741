"""The site file schema. Field names are the YAML keys; defaults are the documented ones."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

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
    """The D3A balancing-market constants, lower-cased, with D3A's own defaults."""

    enable_balancing_market: bool = False
    balancing_spot_trade_ratio: Ratio = 0.2
    balancing_offer_demand_ratio: Ratio = 0.1
    balancing_offer_supply_ratio: Ratio = 0.1
    balancing_flexible_loads_support: bool = True


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

    initial_soc: Ratio = 0.5
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


class Battery(Strict):
    name: Name
    kind: Literal["battery"] = "battery"
    transport: Literal["modbus-tcp", "modbus-rtu"] = "modbus-tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)
    serial: SerialSettings | None = None  # required for modbus-rtu, refused for modbus-tcp
    register_map: str = "battery_generic"
    timeout_s: float = Field(default=1.0, gt=0, le=30)
    capacity_kwh: float = Field(gt=0)
    soc_min: Ratio = 0.1
    soc_max: Ratio = 0.95
    # Energy kept back for the site's own needs (backup); never offered or dispatched.
    reserve_soc: Ratio = 0.0
    max_charge_kw: float = Field(gt=0)
    max_discharge_kw: float = Field(gt=0)
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)
    # Device-side lease: it reverts to 0 kW if no setpoint arrives for this long.
    setpoint_timeout_s: int = Field(default=10, ge=1, le=3600)
    simulator: SimulatorSettings = SimulatorSettings()

    @model_validator(mode="after")
    def _soc_window(self) -> Battery:
        if not self.soc_min + self.reserve_soc < self.soc_max:
            raise ValueError("soc_min + reserve_soc must be below soc_max")
        return self

    @model_validator(mode="after")
    def _transport_fields(self) -> Battery:
        """Fields of the other transport are refused rather than silently ignored."""
        if self.transport == "modbus-tcp":
            if self.serial is not None:
                raise ValueError("serial is only for transport modbus-rtu; "
                                 "modbus-tcp uses host and port")
            if self.simulator.serial_port is not None:
                raise ValueError("simulator.serial_port is only for transport modbus-rtu")
            return self
        if self.serial is None:
            raise ValueError("transport modbus-rtu needs a serial section (port, baudrate, ...)")
        if {"host", "port"} & self.model_fields_set:
            raise ValueError("host and port are for modbus-tcp; modbus-rtu uses serial.port")
        if self.unit_id == 0:
            raise ValueError("unit_id 0 is the broadcast address on a serial bus: "
                             "no device answers it; use 1..247")
        return self


Device = Battery


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
    buses: dict[str, tuple[Battery, set[int]]] = {}
    for index, device in enumerate(config.devices):
        if device.serial is None:
            continue
        # One port is one bus: one speed and format, one simulator end, distinct unit ids.
        where = f"devices[{index}] ({device.name})"
        first, units = buses.setdefault(device.serial.port, (device, set()))
        if first.serial != device.serial:
            problems.append((f"{where}.serial", f"line settings differ from {first.name!r} "
                             f"on the same port {device.serial.port}"))
        elif first.simulator.serial_port != device.simulator.serial_port:
            problems.append((f"{where}.simulator.serial_port",
                             f"differs from {first.name!r} on the same port"))
        elif device.unit_id in units:
            problems.append((f"{where}.unit_id", f"unit {device.unit_id} is used twice "
                             f"on {device.serial.port}"))
        units.add(device.unit_id)
    seen: set[str] = set()
    for index, tariff in enumerate(config.tariffs):
        if tariff.id in seen:
            problems.append((f"tariffs[{index}].id", f"tariff id {tariff.id!r} is used twice"))
        seen.add(tariff.id)
        for asset in tariff.assets:
            if asset not in names:
                problems.append((f"tariffs[{index}] ({tariff.id}).assets",
                                 f"{asset!r} is not a device"))
    return problems
