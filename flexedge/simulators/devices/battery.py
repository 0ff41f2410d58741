"""Battery physics for the simulator: no I/O and no clock reads, so tests can drive time.

Every method that moves time takes an explicit `now` (seconds on any monotonic base) and the
model integrates exactly, piecewise, up to it: power is constant between commands except where
the SoC reaches a bound (power drops to 0 there) or the setpoint lease runs out (the setpoint
drops to 0 there). There is no step size, so results do not depend on how often it is polled.

Sign convention of the site: p_kw > 0 discharges (injects), p_kw < 0 charges.
"""

from __future__ import annotations

import math

from flexedge.config.schema import Battery

SECONDS_PER_HOUR = 3600.0


class BatteryModel:
    """One battery: SoC window, power ratings, round-trip losses and a setpoint lease.

    The SoC window [soc_min, soc_max] is the physical limit the BMS enforces; the controller's
    reserve is policy and lives in the controller, not here.
    """

    def __init__(
        self,
        *,
        capacity_kwh: float,
        soc_min: float,
        soc_max: float,
        max_charge_kw: float,
        max_discharge_kw: float,
        charge_efficiency: float = 0.95,
        discharge_efficiency: float = 0.95,
        setpoint_timeout_s: float = 10.0,
        initial_soc: float = 0.5,
        now: float = 0.0,
    ) -> None:
        if not capacity_kwh > 0:
            raise ValueError("capacity_kwh must be > 0")
        if not 0.0 <= soc_min <= soc_max <= 1.0:
            raise ValueError("need 0 <= soc_min <= soc_max <= 1")
        if not (max_charge_kw > 0 and max_discharge_kw > 0):
            raise ValueError("power ratings must be > 0")
        if not (0 < charge_efficiency <= 1 and 0 < discharge_efficiency <= 1):
            raise ValueError("efficiencies must be in (0, 1]")
        if not soc_min <= initial_soc <= soc_max:
            raise ValueError(f"initial_soc {initial_soc} is outside [{soc_min}, {soc_max}]")
        self.capacity_kwh = float(capacity_kwh)
        self.soc_min = float(soc_min)
        self.soc_max = float(soc_max)
        self.charge_efficiency = float(charge_efficiency)
        self.discharge_efficiency = float(discharge_efficiency)
        self._max_charge_kw = float(max_charge_kw)
        self._max_discharge_kw = float(max_discharge_kw)
        self._timeout_s = _check_timeout(setpoint_timeout_s)
        self._soc = float(initial_soc)
        self._t = float(now)
        self._setpoint_kw = 0.0
        self._last_command_t = float(now)
        # AC-side energy through the terminals, cumulative, for energy-balance checks.
        self._charged_kwh = 0.0
        self._discharged_kwh = 0.0

    @classmethod
    def from_config(cls, battery: Battery, now: float = 0.0) -> BatteryModel:
        """A model with the ratings of a site-file battery and its simulator.initial_soc."""
        return cls(
            capacity_kwh=battery.capacity_kwh,
            soc_min=battery.soc_min,
            soc_max=battery.soc_max,
            max_charge_kw=battery.max_charge_kw,
            max_discharge_kw=battery.max_discharge_kw,
            charge_efficiency=battery.charge_efficiency,
            discharge_efficiency=battery.discharge_efficiency,
            setpoint_timeout_s=battery.setpoint_timeout_s,
            initial_soc=battery.simulator.initial_soc,
            now=now,
        )

    # -- state ---------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """The instant the state below describes (the last `now` seen)."""
        return self._t

    @property
    def soc(self) -> float:
        return self._soc

    @property
    def stored_kwh(self) -> float:
        return self._soc * self.capacity_kwh

    @property
    def setpoint_kw(self) -> float:
        """The commanded setpoint as written (unclipped), 0 once the lease has run out."""
        return self._setpoint_kw

    @property
    def p_kw(self) -> float:
        """Actual power now: the setpoint clipped to the ratings and the SoC window."""
        return self._actual(self._setpoint_kw)

    @property
    def max_charge_kw(self) -> float:
        return self._max_charge_kw

    @property
    def max_discharge_kw(self) -> float:
        return self._max_discharge_kw

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @property
    def charged_kwh(self) -> float:
        """Energy taken in at the terminals since construction (before charge losses)."""
        return self._charged_kwh

    @property
    def discharged_kwh(self) -> float:
        """Energy delivered at the terminals since construction (after discharge losses)."""
        return self._discharged_kwh

    # -- inputs --------------------------------------------------------------------------

    def command(self, p_kw: float, now: float) -> None:
        """Set the setpoint at `now` and renew the lease. Out-of-rating values are kept as
        written and clipped by the physics, like an inverter that accepts the register."""
        if not math.isfinite(p_kw):
            raise ValueError(f"setpoint must be finite, got {p_kw}")
        self.advance(now)
        self._setpoint_kw = float(p_kw)
        self._last_command_t = self._t

    def set_timeout(self, seconds: float, now: float | None = None) -> None:
        """Change the lease length. The lease still counts from the last command, so a shorter
        timeout that has already elapsed reverts the setpoint at once (at `now`)."""
        timeout = _check_timeout(seconds)
        if now is not None:
            self.advance(now)
        self._timeout_s = timeout
        self.advance(self._t)  # apply an already-elapsed lease at the current instant

    def advance(self, now: float) -> None:
        """Integrate the physics up to `now`."""
        if now < self._t:
            raise ValueError(f"time went backwards: {now} < {self._t}")
        if self._setpoint_kw != 0.0:
            expiry = self._last_command_t + self._timeout_s
            if expiry <= now:
                self._integrate(max(expiry, self._t))
                self._setpoint_kw = 0.0
        self._integrate(now)

    # -- internals -----------------------------------------------------------------------

    def _actual(self, setpoint_kw: float) -> float:
        p = min(max(setpoint_kw, -self._max_charge_kw), self._max_discharge_kw)
        if (p > 0 and self._soc <= self.soc_min) or (p < 0 and self._soc >= self.soc_max):
            return 0.0
        return p

    def _integrate(self, to: float) -> None:
        """Constant setpoint from self._t to `to`; stops exactly at a SoC bound."""
        hours = (to - self._t) / SECONDS_PER_HOUR
        self._t = to
        p = self._actual(self._setpoint_kw)
        if hours <= 0 or p == 0.0:
            return
        if p > 0:
            drawn_kwh = p / self.discharge_efficiency * hours
            room_kwh = (self._soc - self.soc_min) * self.capacity_kwh
            if drawn_kwh >= room_kwh:
                # Empty before `to`: deliver only what the room allows, then power is 0.
                self._soc = self.soc_min
                self._discharged_kwh += room_kwh * self.discharge_efficiency
            else:
                # max(): rounding must not push the SoC an ulp past the bound.
                self._soc = max(self.soc_min, self._soc - drawn_kwh / self.capacity_kwh)
                self._discharged_kwh += p * hours
        else:
            stored_kwh = -p * self.charge_efficiency * hours
            room_kwh = (self.soc_max - self._soc) * self.capacity_kwh
            if stored_kwh >= room_kwh:
                self._soc = self.soc_max
                self._charged_kwh += room_kwh / self.charge_efficiency
            else:
                self._soc = min(self.soc_max, self._soc + stored_kwh / self.capacity_kwh)
                self._charged_kwh += -p * hours


def _check_timeout(seconds: float) -> float:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"setpoint timeout must be a positive number of seconds, got {seconds}")
    return float(seconds)
