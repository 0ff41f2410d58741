"""Market scenarios: YAML files of timed steps the market simulator plays against a site.

A scenario is a list of steps run in order. Time is counted in market slots from the start:
slot 0 is the first whole slot after the simulator is up (offers are not retained, so only a
slot whose start it saw has a complete order book). Each step may name its `slot` and the
`second` into that slot; a step that names neither runs when the previous one did, and
`wait_slots: n` moves on to the start of the n-th next slot. Example:

    name: short-day
    steps:
      - {slot: 0, second: 3, spot_trade: {asset: battery-1, side: buy, energy_kwh: 1, rate: 28}}
      - {second: 6, imbalance: {kwh: 0.01}}
      - wait_slots: 1
      - economic_control: {tariff: tariff-1, curtailment_ratio: 0.5}

Errors name the file and the field, as site files do (flexedge.errors.ConfigError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flexedge.config.registermap import read_yaml
from flexedge.config.schema import SiteConfig
from flexedge.errors import ConfigError, field_problems
from flexedge.simulators.devices.fault_client import fault_message
from flexedge.simulators.devices.faults import FaultError, FaultState, updated


class _Strict(BaseModel):
    # A misspelt key must fail loudly: a silently ignored step field would change the run.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpotTrade(_Strict):
    """A D3A spot-market trade of one site asset; the balancing agent follows it."""

    asset: str = Field(min_length=1)
    side: Literal["buy", "sell"]
    energy_kwh: float = Field(gt=0, allow_inf_nan=False)
    rate: float = Field(ge=0, allow_inf_nan=False)  # ct/kWh


class Imbalance(_Strict):
    """A Power TAC imbalance the utility covers by exercising standing orders.

    kwh > 0 is a shortage (up-regulation wanted), kwh < 0 a surplus (down-regulation).
    Without `tariff` every standing order on the side of the imbalance may be exercised.
    `regulating_price_per_kwh` is the price of the regulating market (Power TAC's pPlus for a
    shortage, pMinus for a surplus; default from the server's default settings): orders
    priced above it are never used. Each exercised kWh is paid `payment_per_kwh`, by default
    the regulating price (see simulators.market.powertac.PAYMENT_RULE).
    """

    kwh: float = Field(allow_inf_nan=False)
    tariff: str | None = Field(default=None, min_length=1)
    payment_per_kwh: float | None = Field(default=None, allow_inf_nan=False)
    regulating_price_per_kwh: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _nonzero(self) -> Self:
        if self.kwh == 0:
            raise ValueError("kwh must not be 0 (> 0 shortage, < 0 surplus)")
        return self


class EconomicControl(_Strict):
    tariff: str = Field(min_length=1)
    curtailment_ratio: float = Field(ge=0, le=1)


class Fault(_Strict):
    """A fault switched on (or off) in a simulated device, as `flexedge fault` does: the
    simulator must run with `--mqtt` on the site's broker. Unset fields stay as they are."""

    device: str = Field(min_length=1)
    drop: bool | None = None
    latency_s: float | None = Field(default=None, ge=0, le=60, allow_inf_nan=False)
    exception: str | None = None  # a Modbus exception name, or "none"
    frozen: bool | None = None
    ignore_writes: bool | None = None
    clear: bool = False

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.message():
            raise ValueError(
                "a fault step needs clear: true or at least one of drop, "
                "latency_s, exception, frozen, ignore_writes"
            )
        try:
            updated(FaultState(), self.message())
        except FaultError as exc:
            raise ValueError(str(exc)) from None
        return self

    def message(self) -> dict[str, object]:
        """The fault message the simulator takes (flexedge.simulators.devices.faults)."""
        return fault_message(
            drop=self.drop,
            latency_s=self.latency_s,
            exception=self.exception,
            frozen=self.frozen,
            ignore_writes=self.ignore_writes,
            clear=self.clear,
        )


Action = SpotTrade | Imbalance | EconomicControl | Fault
ACTIONS = ("spot_trade", "imbalance", "economic_control", "fault", "wait_slots")


class Step(_Strict):
    slot: int | None = Field(default=None, ge=0)
    second: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    note: str = ""  # printed when the step runs
    spot_trade: SpotTrade | None = None
    imbalance: Imbalance | None = None
    economic_control: EconomicControl | None = None
    fault: Fault | None = None
    wait_slots: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        given = [name for name in ACTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a step needs exactly one of {', '.join(ACTIONS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.wait_slots is not None and (self.slot is not None or self.second is not None):
            raise ValueError("wait_slots moves time on by itself; drop slot and second")
        return self

    @property
    def action(self) -> Action:
        # Exactly one is set (_one_action); wait_slots never reaches the runner.
        action = self.spot_trade or self.imbalance or self.economic_control or self.fault
        assert action is not None
        return action


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    steps: list[Step] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class TimedStep:
    """A step placed on the clock: `offset_s` seconds after the start of slot 0."""

    index: int  # position in the file, for messages
    slot: int
    second: float
    offset_s: float
    action: Action
    note: str


def parse_scenario(raw: object, source: str) -> Scenario:
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a scenario file must be a YAML mapping")
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = field_problems(exc)[0]
        raise ConfigError(source, first.field, first.message) from None


def timeline(scenario: Scenario, slot_seconds: float, source: str) -> list[TimedStep]:
    """Place every step on the clock, checking that time only moves forward."""
    slot, second = 0, 0.0
    placed: list[TimedStep] = []
    for index, step in enumerate(scenario.steps):
        where = f"steps[{index}]"
        if step.wait_slots is not None:
            slot, second = slot + step.wait_slots, 0.0
            continue
        if step.slot is not None:
            if step.slot < slot:
                raise ConfigError(
                    source,
                    f"{where}.slot",
                    f"slot {step.slot} is before slot {slot}, which the steps before it reached",
                )
            if step.slot > slot:
                slot, second = step.slot, 0.0
        if step.second is not None:
            if step.second >= slot_seconds:
                raise ConfigError(
                    source,
                    f"{where}.second",
                    f"{step.second:g} s is not inside a slot of the site ({slot_seconds:g} s)",
                )
            if step.second < second:
                raise ConfigError(
                    source,
                    f"{where}.second",
                    f"second {step.second:g} of "
                    f"slot {slot} is before the step before it ({second:g})",
                )
            second = step.second
        placed.append(
            TimedStep(index, slot, second, slot * slot_seconds + second, step.action, step.note)
        )
    return placed


def check_against_site(scenario: Scenario, site: SiteConfig, source: str) -> None:
    """Assets and tariffs the scenario names must exist at the site it is played against."""
    devices = {d.name for d in site.devices}
    tariffs = {t.id for t in site.tariffs}
    for index, step in enumerate(scenario.steps):
        where = f"steps[{index}]"
        if step.spot_trade and step.spot_trade.asset not in devices:
            raise ConfigError(
                source,
                f"{where}.spot_trade.asset",
                f"{step.spot_trade.asset!r} is not a device of site {site.site!r}",
            )
        if step.fault and step.fault.device not in devices:
            raise ConfigError(
                source,
                f"{where}.fault.device",
                f"{step.fault.device!r} is not a device of site {site.site!r}",
            )
        named = (
            ("imbalance", step.imbalance.tariff if step.imbalance else None),
            ("economic_control", step.economic_control.tariff if step.economic_control else None),
        )
        for action, tariff in named:
            if tariff is not None and tariff not in tariffs:
                raise ConfigError(
                    source,
                    f"{where}.{action}.tariff",
                    f"{tariff!r} is not a tariff of site {site.site!r}",
                )


def load_scenario(path: Path, site: SiteConfig) -> tuple[Scenario, list[TimedStep]]:
    """Read, validate and place a scenario for `site`; ConfigError names file and field."""
    source = str(path)
    scenario = parse_scenario(read_yaml(path, "scenario file"), source)
    check_against_site(scenario, site, source)
    placed = timeline(scenario, site.slot_seconds, source)
    if not placed:
        raise ConfigError(source, "steps", "only wait_slots: the scenario does nothing")
    return scenario, placed
