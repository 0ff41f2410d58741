"""The site file schema. Field names are the YAML keys; defaults are the documented ones.

The whole file (SiteConfig) and its site-wide sections are here; a device entry is in
device_base.py (what every kind shares) and device_kinds.py (battery, flexible_load,
generator), its transport sections in transports.py, the mqtt section in
mqtt_settings.py, the shared field types in field_types.py. Every model is importable from here.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from flexedge.config.device_base import DeviceBase, SimulatorSettings
from flexedge.config.device_kinds import Battery, Device, FlexibleLoad, Generator, ProfilePoint
from flexedge.config.field_types import Name, Ratio, Strict
from flexedge.config.limits import LimitSettings
from flexedge.config.metrics import MetricsSettings
from flexedge.config.mqtt_settings import MqttSettings, MqttTls
from flexedge.config.retention import RetentionSettings
from flexedge.config.transports import JsonPath, MqttDeviceSettings, SerialSettings, Topic
from flexedge.controller.core.orders import Direction, direction_of_ratio, ratio_problem

__all__ = [
    "BalancingConstants",
    "BalancingOrderSpec",
    "BalancingRates",
    "Battery",
    "Device",
    "DeviceBase",
    "FlexibleLoad",
    "Generator",
    "JsonPath",
    "LimitSettings",
    "MetricsSettings",
    "MqttDeviceSettings",
    "MqttSettings",
    "MqttTls",
    "Name",
    "ProfilePoint",
    "Ratio",
    "SerialSettings",
    "SimulatorSettings",
    "SiteConfig",
    "Strict",
    "Tariff",
    "Topic",
]


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


class BalancingOrderSpec(Strict):
    """One standing order: r in (0, 2] an up order, r in [-1, 0) a down order."""

    exercise_ratio: float = Field(ge=-1.0, le=2.0)
    price_per_kwh: float

    @property
    def direction(self) -> Direction:
        return direction_of_ratio(self.exercise_ratio)


class Tariff(Strict):
    """A Power TAC tariff: its assets and the standing balancing orders flexedge offers for
    it, at most one per direction (Power TAC's server keeps an up and a down order)."""

    id: Name
    assets: list[Name] = Field(min_length=1)
    # The order of the ratio's direction: (0, 2] up, [-1, 0) down (Power TAC's BalancingOrder).
    exercise_ratio: float = Field(ge=-1.0, le=2.0)
    price_per_kwh: float
    # The order of the other direction, if the tariff offers both.
    second_order: BalancingOrderSpec | None = None

    @model_validator(mode="after")
    def _orders(self) -> Tariff:
        if self.exercise_ratio == 0:
            raise ValueError("exercise_ratio 0 offers nothing; use a value in [-1, 0) or (0, 2]")
        if self.second_order is not None:
            first = direction_of_ratio(self.exercise_ratio)
            other: Direction = "down" if first == "up" else "up"
            problem = ratio_problem(self.second_order.exercise_ratio, other)
            if problem:
                raise ValueError(
                    f"second_order: {problem}; exercise_ratio {self.exercise_ratio} "
                    f"is already the {first} order"
                )
        return self

    def orders(self) -> list[BalancingOrderSpec]:
        """The tariff's orders, one per direction."""
        first = BalancingOrderSpec(
            exercise_ratio=self.exercise_ratio, price_per_kwh=self.price_per_kwh
        )
        return [first] if self.second_order is None else [first, self.second_order]


class SiteConfig(Strict):
    site: Name
    mqtt: MqttSettings = MqttSettings()
    slot_seconds: int = Field(default=900, ge=10, le=86400)
    control_period_s: float = Field(default=1.0, ge=0.05, le=3600)
    # A delivery counts as delivered when within this share of the accepted energy.
    delivery_tolerance: Ratio = 0.02
    # Where the SQLite log goes; relative paths are relative to the site file.
    log_db: str = "flexedge.sqlite"
    # What a market message or an operator's order may ask (horizon, prices, payments).
    limits: LimitSettings = LimitSettings()
    # How long the log keeps telemetry, acknowledged messages and records (retention.py).
    retention: RetentionSettings = RetentionSettings()
    # The Prometheus endpoint (metrics.py): off unless `listen` is given.
    metrics: MetricsSettings = MetricsSettings()
    balancing: BalancingConstants = BalancingConstants()
    # Factories only because ruff cannot see that Strict is a pydantic model (which copies
    # mutable defaults): the defaults are the same empty registry and tariff list.
    asset_registry: dict[Name, BalancingRates] = Field(default_factory=dict)
    tariffs: list[Tariff] = Field(default_factory=list)
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
