"""Each device kind as the control loop sees it: its baseline, what it may be commanded to,
and how a planned setpoint becomes a command for its driver.

This is the shell's translation from site-file settings to the core's plain data; the
decisions themselves stay in flexedge/controller/core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flexedge.config.schema import Battery, FlexibleLoad, Generator
from flexedge.config.schema import Device as DeviceConfig
from flexedge.controller.core.admission import AssetState
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.dispatch import AT_ONCE, DeviceView, ResponseFigures, battery_view
from flexedge.controller.core.kinds import (
    GeneratorLimits,
    LoadLimits,
    MeasuredBaseline,
    generator_feasible,
    generator_headroom,
    load_command,
    load_feasible,
    load_headroom,
    profile_kw,
)
from flexedge.controller.core.model import BatteryLimits
from flexedge.controller.core.relays import RelayHistory, RelayRules, relay_feasible
from flexedge.drivers.base import Reading


@dataclass(frozen=True)
class BatteryAsset:
    limits: BatteryLimits
    response: ResponseFigures = AT_ONCE

    def baseline_kw(self, ts: float) -> float:
        return 0.0  # an idle battery

    def view(
        self, reading: Reading | None, fresh: bool, horizon_s: float, now: float
    ) -> DeviceView:
        view = battery_view(self.limits, reading.soc if reading else None, fresh, horizon_s)
        return DeviceView(view.feasible, self.response)

    def command(self, setpoint_kw: float, now: float) -> float | None:
        return setpoint_kw

    def safe_command(self) -> float | None:
        return 0.0

    def state(self, reading: Reading | None, fresh: bool, now: float) -> AssetState:
        soc = reading.soc if reading else None
        if not fresh or soc is None:
            return AssetState("battery", None, self.limits, soc)
        headroom = Headroom.of_battery(self.limits, soc)
        return AssetState("battery", headroom, self.limits, soc, response=self.response)


@dataclass(frozen=True)
class LoadAsset:
    limits: LoadLimits
    profile: tuple[tuple[float, float], ...]
    # Set for `baseline: measured`: the control loop feeds it every reading.
    measured: MeasuredBaseline | None = field(default=None, compare=False)
    # A relay load's switching rules, and what it was told when (the dispatcher records it).
    relay: RelayRules | None = None
    history: RelayHistory = field(default_factory=RelayHistory, compare=False)
    response: ResponseFigures = AT_ONCE

    def baseline_kw(self, ts: float) -> float:
        """What the load draws uncurtailed (site sign, < 0): its recent measured average
        (frozen while dispatched) when so configured and known, else its declared profile."""
        if self.measured is not None:
            value = self.measured.value(ts)
            if value is not None:
                return value
        return -profile_kw(self.profile, ts)

    def view(
        self, reading: Reading | None, fresh: bool, horizon_s: float, now: float
    ) -> DeviceView:
        if not fresh or reading is None:
            return DeviceView(None)
        feasible = load_feasible(self.limits, -self.baseline_kw(now))
        if self.relay is not None:
            feasible = relay_feasible(feasible, self.history, self.relay, now)
        return DeviceView(feasible, self.response)

    def command(self, setpoint_kw: float, now: float) -> float | None:
        return load_command(setpoint_kw, self.baseline_kw(now))

    def safe_command(self) -> float | None:
        return None  # released: the load draws what it needs

    def state(self, reading: Reading | None, fresh: bool, now: float) -> AssetState:
        if not fresh:
            return AssetState("flexible_load", None)
        usage_kw = -self.baseline_kw(now)
        return AssetState(
            "flexible_load",
            load_headroom(self.limits, usage_kw),
            usage_kw=max(usage_kw, 0.0),
            response=self.response,
        )


@dataclass(frozen=True)
class GeneratorAsset:
    limits: GeneratorLimits
    response: ResponseFigures = AT_ONCE

    def baseline_kw(self, ts: float) -> float:
        return self.limits.baseline_kw

    def view(
        self, reading: Reading | None, fresh: bool, horizon_s: float, now: float
    ) -> DeviceView:
        if not fresh or reading is None:
            return DeviceView(None)
        feasible = generator_feasible(self.limits, reading.p_kw, horizon_s)
        return DeviceView(feasible, self.response)

    def command(self, setpoint_kw: float, now: float) -> float | None:
        return setpoint_kw

    def safe_command(self) -> float | None:
        return self.limits.baseline_kw  # back to its schedule (0: stop)

    def state(self, reading: Reading | None, fresh: bool, now: float) -> AssetState:
        if not fresh:
            return AssetState("generator", None)
        return AssetState("generator", generator_headroom(self.limits), response=self.response)


Asset = BatteryAsset | LoadAsset | GeneratorAsset


def battery_limits(device: Battery) -> BatteryLimits:
    return BatteryLimits(
        asset=device.name,
        capacity_kwh=device.capacity_kwh,
        soc_floor=device.soc_min + device.reserve_soc,
        soc_ceiling=device.soc_max,
        max_charge_kw=device.max_charge_kw,
        max_discharge_kw=device.max_discharge_kw,
        charge_efficiency=device.charge_efficiency,
        discharge_efficiency=device.discharge_efficiency,
    )


def response_figures(device: DeviceConfig) -> ResponseFigures:
    """The site file's `response` block (what prequalify measured); a generator's ramp is
    its declared one unless a measured ramp is given."""
    ramp = device.response.ramp_kw_per_s
    if ramp is None and isinstance(device, Generator):
        ramp = device.ramp_kw_per_s
    return ResponseFigures(device.response.delay_s, ramp)


def asset_for(device: DeviceConfig) -> Asset:
    response = response_figures(device)
    if isinstance(device, Battery):
        return BatteryAsset(battery_limits(device), response)
    if isinstance(device, FlexibleLoad):
        return LoadAsset(
            LoadLimits(
                device.name,
                device.curtailable_share,
                device.control == "relay",
                device.max_extra_kw,
                device.extra_buffer_kwh,
            ),
            tuple((float(t), float(kw)) for t, kw in device.baseline_profile),
            MeasuredBaseline(device.baseline_window_s) if device.baseline == "measured" else None,
            RelayRules(
                device.relay_min_on_s, device.relay_min_off_s, device.relay_max_switches_per_hour
            )
            if device.control == "relay"
            else None,
            response=response,
        )
    assert isinstance(device, Generator)
    assert response.ramp_kw_per_s is not None
    return GeneratorAsset(
        GeneratorLimits(
            device.name, device.min_kw, device.max_kw, response.ramp_kw_per_s, device.baseline_kw
        ),
        response,
    )
