"""The device kinds of the site file (battery, flexible_load, generator) and `Device`, the
union a site's `devices` list is made of, told apart by `kind`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self

from pydantic import Discriminator, Field, Tag, model_validator

from flexedge.config.device_base import DeviceBase
from flexedge.config.field_types import MAX_RATING_KW, Ratio


class Battery(DeviceBase):
    kind: Literal["battery"] = "battery"
    capacity_kwh: float = Field(gt=0)
    soc_min: Ratio = 0.1
    soc_max: Ratio = 0.95
    # Energy kept back for the site's own needs (backup); never offered or dispatched.
    reserve_soc: Ratio = 0.0
    max_charge_kw: float = Field(gt=0, le=MAX_RATING_KW)
    max_discharge_kw: float = Field(gt=0, le=MAX_RATING_KW)
    charge_efficiency: float = Field(default=0.95, gt=0, le=1)
    discharge_efficiency: float = Field(default=0.95, gt=0, le=1)

    @model_validator(mode="after")
    def _soc_window(self) -> Battery:
        if not self.soc_min + self.reserve_soc < self.soc_max:
            raise ValueError("soc_min + reserve_soc must be below soc_max")
        return self


ProfilePoint = tuple[
    Annotated[float, Field(ge=0, lt=86400)], Annotated[float, Field(ge=0, le=MAX_RATING_KW)]
]


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
    # Rated consumption; no limit above it is ever written.
    max_kw: float = Field(gt=0, le=MAX_RATING_KW)
    # control setpoint only: how much more than its baseline it can be told to draw (the
    # D3A demand offer, downward regulation), and the extra energy its buffer (a thermal
    # store, an energy need still to meet) takes before it is full. 0: it cannot draw more.
    max_extra_kw: float = Field(default=0.0, ge=0, le=MAX_RATING_KW)
    extra_buffer_kwh: float = Field(default=0.0, ge=0)
    # control relay only: a relay switches only after it has been on (off) this long, and at
    # most this many times an hour, so that dispatch never chatters a contactor.
    relay_min_on_s: float = Field(default=30.0, ge=0, le=86400)
    relay_min_off_s: float = Field(default=30.0, ge=0, le=86400)
    relay_max_switches_per_hour: int = Field(default=20, ge=1, le=3600)

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
    max_kw: float = Field(gt=0, le=MAX_RATING_KW)
    ramp_kw_per_s: float = Field(gt=0)
    # Output it would run at without balancing (its schedule); 0 = stopped.
    baseline_kw: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _band(self) -> Generator:
        if not self.min_kw < self.max_kw:
            raise ValueError("min_kw must be below max_kw")
        if self.baseline_kw and not self.min_kw <= self.baseline_kw <= self.max_kw:
            raise ValueError("baseline_kw must be 0 (stopped) or within [min_kw, max_kw]")
        if self.simulator.lag_s:
            raise ValueError(
                "simulator.lag_s: a simulated generator follows its ramp, it has no lag (leave"
                " it 0; set simulator.ramp_kw_per_s and response_delay_s instead)"
            )
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
