"""What each device kind shows in its registers and does with writes, in site units.

The Modbus simulator (modbus_server) serves any device kind the same way: it
encodes the values of a map's points and decodes writes. What those values are, and what a
write does to the physics, depends on the kind; a small adapter per kind says it:

    battery:  power, soc, max_charge_power, max_discharge_power, power_setpoint,
              setpoint_timeout                                   (battery)
    load:     power, power_limit (kW; "no limit" shows as the rating max_kw),
              relay (1 on, 0 shed), power_setpoint (kW, site sign) with
              setpoint_enable (1 follow it, 0 own demand), setpoint_timeout  (load)
    generator: power, running (1/0), power_setpoint, setpoint_timeout
                                                                 (generator)

Points an adapter does not name (heartbeat, SunSpec control words) keep what was written.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from flexedge.config.schema import Battery, DeviceBase, FlexibleLoad, Generator
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.response import STEP_S, NoisyMeter, Response

SimModel = BatteryModel | LoadModel | GeneratorModel
M = TypeVar("M", BatteryModel, LoadModel, GeneratorModel)
Reader = Callable[[], float]


class ModelAdapter(ABC, Generic[M]):
    """One physics model seen as named points. Callers advance() to the request's instant
    before reading or applying, so every value describes that instant."""

    def __init__(self, model: M) -> None:
        self.model: M = model

    def advance(self, now: float) -> None:
        self.model.advance(now)

    @abstractmethod
    def readers(self) -> dict[str, Reader]:
        """The current value of every point the model owns, by point name."""

    @abstractmethod
    def limits(self, name: str) -> list[float]:
        """Values the device may put in point `name`: the simulator checks at startup that
        the map's registers hold them (an empty list: nothing to check)."""

    def accepts(self, name: str, value: float) -> bool:
        """Whether a decoded write is one the device takes (else ILLEGAL_VALUE)."""
        return math.isfinite(value) and (name != "setpoint_timeout" or value > 0)

    @abstractmethod
    def apply(self, name: str, value: float, now: float) -> None:
        """Act on an accepted write of `value` to `name` at `now`; other names do nothing."""


class BatteryAdapter(ModelAdapter[BatteryModel]):
    def readers(self) -> dict[str, Reader]:
        m = self.model
        return {
            "power": lambda: m.p_kw,
            "soc": lambda: m.soc,
            "max_charge_power": lambda: m.max_charge_kw,
            "max_discharge_power": lambda: m.max_discharge_kw,
            "power_setpoint": lambda: m.setpoint_kw,
            "setpoint_timeout": lambda: m.timeout_s,
        }

    def limits(self, name: str) -> list[float]:
        m = self.model
        return {
            "power": [m.max_discharge_kw, -m.max_charge_kw],
            "power_setpoint": [m.max_discharge_kw, -m.max_charge_kw],
            "soc": [1.0],
            "max_charge_power": [m.max_charge_kw],
            "max_discharge_power": [m.max_discharge_kw],
            "setpoint_timeout": [m.timeout_s],
        }.get(name, [])

    def apply(self, name: str, value: float, now: float) -> None:
        if name == "power_setpoint":
            self.model.command(value, now)
        elif name == "setpoint_timeout":
            self.model.set_timeout(value, now)


class RespondingBatteryAdapter(BatteryAdapter):
    """A battery whose power stage follows its setpoint like hardware (response.py), and
    whose meter is noisy. The lease is the adapter's: the setpoint as written (which reads
    back at once, as an inverter's register does) reverts to 0 `setpoint_timeout` after it
    was written; the model is driven with the stage's output, in steps of STEP_S."""

    def __init__(self, model: BatteryModel, response: Response, meter: NoisyMeter):
        super().__init__(model)
        self.response = response
        self._written_kw = 0.0
        self._written_at = model.time
        self._meter = meter

    def advance(self, now: float) -> None:
        expiry = self._written_at + self.model.timeout_s
        if self._written_kw != 0.0 and expiry <= now:
            self._drive(expiry)
            self._written_kw = 0.0
            self.response.command(0.0, expiry)
        self._drive(now)

    def _drive(self, to: float) -> None:
        # While the stage moves, the model runs each step of STEP_S at the mean of the
        # stage's output at its ends (exact for a ramp); then it shows the output at `to`.
        # The model's own lease is renewed on every step: the adapter's is the one that counts.
        t = self.model.time
        while t < to and not self.response.idle:
            step_end = min(to, (math.floor(t / STEP_S + 1e-9) + 1) * STEP_S)
            if step_end <= t:
                break
            mean = (self.response.output(t) + self.response.output(step_end)) / 2
            self.model.command(mean, t)
            self.model.advance(step_end)
            t = step_end
        self.model.command(self.response.output(t), t)  # settled (or at `to`): its output
        self.model.command(self.response.output(to), to)

    def readers(self) -> dict[str, Reader]:
        readers = super().readers()
        m = self.model
        readers["power"] = lambda: self._meter.read(m.p_kw)
        readers["power_setpoint"] = lambda: self._written_kw
        return readers

    def apply(self, name: str, value: float, now: float) -> None:
        if name == "power_setpoint":
            self.advance(now)
            self._written_kw, self._written_at = value, now
            self.response.command(value, now)
            self._drive(now)
        elif name == "setpoint_timeout":
            self.advance(now)
            self.model.set_timeout(value, now)


class LoadAdapter(ModelAdapter[LoadModel]):
    """A flexible load. `max_kw` is its rating: the model has none, but the registers need
    one to show "no limit" and to tell a release (a limit at or above it) from a cap."""

    def __init__(self, model: LoadModel, *, max_kw: float, meter: NoisyMeter | None = None):
        super().__init__(model)
        self._meter = meter or NoisyMeter(0.0, 0)
        if not max_kw > 0:
            raise ValueError(f"max_kw must be > 0, got {max_kw}")
        self.max_kw = max_kw
        # A consumption setpoint (site sign, <= 0) and whether the load follows it.
        self._setpoint_kw = 0.0
        self._enabled = False

    def readers(self) -> dict[str, Reader]:
        m = self.model
        return {
            "power": lambda: self._meter.read(m.p_kw),
            "power_limit": lambda: self.max_kw if m.limit_kw is None else m.limit_kw,
            "relay": lambda: 1.0 if m.limit_kw is None else 0.0,
            "power_setpoint": lambda: self._setpoint_kw,
            "setpoint_enable": lambda: 1.0 if m.limit_kw is not None else 0.0,
            "setpoint_timeout": lambda: m.timeout_s,
        }

    def limits(self, name: str) -> list[float]:
        # Consumption above the rating (noise, rebound) is shown saturated, not checked here.
        return {
            "power": [0.0, -self.max_kw],
            "power_limit": [0.0, self.max_kw],
            "power_setpoint": [0.0, -self.max_kw],
            "relay": [0.0, 1.0],
            "setpoint_enable": [0.0, 1.0],
            "setpoint_timeout": [self.model.timeout_s],
        }.get(name, [])

    def accepts(self, name: str, value: float) -> bool:
        if name in ("relay", "setpoint_enable"):
            return value in (0.0, 1.0)
        if name == "power_limit" and value < 0:
            return False
        if name == "power_setpoint" and value > 0:
            return False  # a load cannot be told to inject
        return super().accepts(name, value)

    def apply(self, name: str, value: float, now: float) -> None:
        if name == "power_limit":
            # A limit at the rating caps nothing: treat it as the release it means, so the
            # lease and rebound logic see "no cap" rather than a cap that never binds.
            self.model.command_limit(None if value >= self.max_kw else value, now)
        elif name == "relay":
            self.model.command_limit(None if value == 1.0 else 0.0, now)
        elif name in ("power_setpoint", "setpoint_enable"):
            if name == "power_setpoint":
                self._setpoint_kw = value
            else:
                self._enabled = value == 1.0
            self.model.command_limit(-self._setpoint_kw if self._enabled else None, now)
        elif name == "setpoint_timeout":
            self.model.advance(now)  # the old lease governs the time up to the change
            self.model.timeout_s = value


class GeneratorAdapter(ModelAdapter[GeneratorModel]):
    """A generator. The model keeps its setpoint private, so the adapter remembers the last
    one written (to show it as written, like a battery) and when, to apply the same lease."""

    def __init__(
        self, model: GeneratorModel, *, now: float, meter: NoisyMeter | None = None
    ) -> None:
        super().__init__(model)
        self._meter = meter or NoisyMeter(0.0, 0)
        self._written_kw = model.fallback_kw
        self._written_at = now
        self._now = now

    def advance(self, now: float) -> None:
        super().advance(now)
        self._now = now

    @property
    def setpoint_kw(self) -> float:
        """The setpoint as written; the fallback once the lease has run out."""
        if self._now - self._written_at >= self.model.timeout_s:
            return self.model.fallback_kw
        return self._written_kw

    def readers(self) -> dict[str, Reader]:
        m = self.model
        return {
            "power": lambda: self._meter.read(m.p_kw),
            "running": lambda: 1.0 if m.running else 0.0,
            "power_setpoint": lambda: self.setpoint_kw,
            "setpoint_timeout": lambda: m.timeout_s,
        }

    def limits(self, name: str) -> list[float]:
        m = self.model
        return {
            "power": [0.0, m.max_kw],
            "running": [0.0, 1.0],
            "power_setpoint": [0.0, m.max_kw],
            "setpoint_timeout": [m.timeout_s],
        }.get(name, [])

    def apply(self, name: str, value: float, now: float) -> None:
        if name == "power_setpoint":
            self.model.command(value, now)
            self._written_kw, self._written_at = value, now
        elif name == "setpoint_timeout":
            self.advance(now)  # ramp under the old lease up to the change
            self.model.timeout_s = value


AnyAdapter = BatteryAdapter | LoadAdapter | GeneratorAdapter


def adapter_for(device: DeviceBase, now: float, utc_offset_s: float = 0.0) -> AnyAdapter:
    """A fresh model for a site-file device, at `now`, behind its kind's adapter; `now` +
    `utc_offset_s` is UTC wall time (a load's profile is by second of day UTC).
    ValueError when the device's settings are outside what the model accepts."""
    sim = device.simulator
    meter = NoisyMeter(sim.measurement_noise_kw, sim.seed)
    if isinstance(device, Battery):
        battery = BatteryModel.from_config(device, now=now)
        if sim.response_delay_s or sim.ramp_kw_per_s or sim.lag_s or sim.measurement_noise_kw:
            response = Response(
                delay_s=sim.response_delay_s,
                ramp_kw_per_s=sim.ramp_kw_per_s,
                lag_s=sim.lag_s,
                now=now,
            )
            return RespondingBatteryAdapter(battery, response, meter)
        return BatteryAdapter(battery)
    if isinstance(device, FlexibleLoad):
        load = load_model_for(device, now, utc_offset_s)
        return LoadAdapter(load, max_kw=device.max_kw, meter=meter)
    if isinstance(device, Generator):
        # Fallback 0: a generator whose controller went quiet stops (its safe state). The
        # simulator's ramp, when set, is the machine's: slower or faster than the file says.
        generator = GeneratorModel(
            min_kw=device.min_kw,
            max_kw=device.max_kw,
            ramp_kw_per_s=sim.ramp_kw_per_s or device.ramp_kw_per_s,
            setpoint_timeout_s=float(device.setpoint_timeout_s),
            fallback_kw=0.0,
            now=now,
            response_delay_s=sim.response_delay_s,
        )
        return GeneratorAdapter(generator, now=now, meter=meter)
    raise ValueError(f"the simulator has no model for device kind {device.kind_name!r}")


def load_model_for(device: FlexibleLoad, now: float, utc_offset_s: float) -> LoadModel:
    """The physics of a site-file load, at `now` (`now` + `utc_offset_s` is UTC wall time),
    for every transport's simulator alike."""
    sim = device.simulator
    return LoadModel(
        profile=device.baseline_profile,
        curtailable_share=device.curtailable_share,
        control=device.control,
        noise_kw=sim.noise_kw,
        rebound_share=sim.rebound_share,
        rebound_s=sim.rebound_s,
        setpoint_timeout_s=float(device.setpoint_timeout_s),
        seed=sim.seed,
        now=now,
        max_extra_kw=device.max_extra_kw,
        extra_buffer_kwh=device.extra_buffer_kwh,
        utc_offset_s=utc_offset_s,
        response_delay_s=sim.response_delay_s,
        ramp_kw_per_s=sim.ramp_kw_per_s,
        lag_s=sim.lag_s,
    )


def wrap(model: BatteryModel | AnyAdapter) -> AnyAdapter:
    """A bare BatteryModel behind its adapter (what SimulatedBattery used to take); an
    adapter is returned as is. Loads and generators come with their adapters, which hold
    what their models lack (a load's rating, a generator's written setpoint)."""
    return BatteryAdapter(model) if isinstance(model, BatteryModel) else model
