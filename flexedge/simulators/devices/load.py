"""Flexible-load physics for the simulator: no I/O and no clock reads.

A load draws its demand: a baseline profile (linear between (second-of-day, kW) points) plus
noise. Part of it (`curtailable_share`) can be shed, either by a continuous power limit or, for
relay-switched loads, all at once. Energy shed is partly owed back: after a release, the load
draws `rebound_share` of it on top of its demand, spread over `rebound_s` (a water heater
reheating). Power follows the site convention, so consumption is negative.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from flexedge.controller.core.kinds import SECONDS_PER_DAY, profile_kw


class LoadModel:
    def __init__(
        self,
        *,
        profile: Sequence[tuple[float, float]],
        curtailable_share: float,
        control: Literal["limit", "relay"],
        noise_kw: float = 0.0,
        rebound_share: float = 0.0,
        rebound_s: float = 600.0,
        setpoint_timeout_s: float = 10.0,
        seed: int = 0,
        now: float = 0.0,
    ) -> None:
        if not profile or any(kw < 0 for _, kw in profile):
            raise ValueError("profile needs at least one (second_of_day, kW >= 0) point")
        if not 0.0 <= curtailable_share <= 1.0 or not 0.0 <= rebound_share <= 1.0:
            raise ValueError("curtailable_share and rebound_share must be in [0, 1]")
        if rebound_s <= 0 or setpoint_timeout_s <= 0 or noise_kw < 0:
            raise ValueError("rebound_s and setpoint_timeout_s must be > 0, noise_kw >= 0")
        self._profile = tuple((float(t) % SECONDS_PER_DAY, float(kw)) for t, kw in profile)
        self.curtailable_share = curtailable_share
        self.control = control
        self.noise_kw = noise_kw
        self.rebound_share = rebound_share
        self.rebound_s = rebound_s
        self.timeout_s = setpoint_timeout_s
        self.seed = seed
        self._t = now
        self._limit_kw: float | None = None  # consumption cap in kW (> 0); None = no limit
        self._last_command_t = now
        self._rebound_owed_kwh = 0.0
        self._consumed_kwh = 0.0

    # -- demand -----------------------------------------------------------------------------
    def profile_kw(self, now: float) -> float:
        """The declared baseline at `now` (the controller reads the same profile)."""
        return profile_kw(self._profile, now)

    def demand_kw(self, now: float) -> float:
        """What the load would draw uncontrolled: profile plus noise that changes every second
        (seeded, so a test run is repeatable)."""
        noise = 0.0
        if self.noise_kw:
            noise = random.Random(hash((self.seed, math.floor(now)))).gauss(0.0, self.noise_kw)
        return max(0.0, self.profile_kw(now) + noise)

    # -- control ----------------------------------------------------------------------------
    def _lease_over(self, now: float) -> bool:
        return now - self._last_command_t >= self.timeout_s

    def consumption_kw(self, now: float) -> float:
        """kW drawn at `now` (>= 0): demand under the limit, never below the firm part."""
        demand = self.demand_kw(now)
        firm = demand * (1.0 - self.curtailable_share)
        limit = None if self._lease_over(now) else self._limit_kw
        if limit is None:
            drawn = demand
        elif self.control == "relay":
            drawn = firm if limit < demand else demand
        else:
            drawn = max(firm, min(demand, limit))
        if limit is None and self._rebound_owed_kwh > 0:
            drawn += self._rebound_owed_kwh * self.rebound_share_rate()
        return drawn

    def rebound_share_rate(self) -> float:
        """Per-hour rate at which owed rebound energy is drawn (spread over rebound_s)."""
        return 3600.0 / self.rebound_s

    def advance(self, now: float) -> None:
        """Integrate to `now` in 1-s steps (demand noise changes every second)."""
        if now < self._t:
            raise ValueError("time went backwards")
        while self._t < now:
            step = min(now - self._t, 1.0 - (self._t % 1.0) or 1.0)
            drawn = self.consumption_kw(self._t)
            demand = self.demand_kw(self._t)
            hours = step / 3600.0
            self._consumed_kwh += drawn * hours
            if drawn < demand:
                self._rebound_owed_kwh += (demand - drawn) * hours * self.rebound_share
            elif self._rebound_owed_kwh > 0:
                paid = (drawn - demand) * hours
                self._rebound_owed_kwh = max(0.0, self._rebound_owed_kwh - paid)
            self._t += step

    def command_limit(self, limit_kw: float | None, now: float) -> None:
        """Cap consumption at `limit_kw` (relay loads: any cap below demand opens the relay)."""
        if limit_kw is not None and (math.isnan(limit_kw) or limit_kw < 0):
            raise ValueError("limit must be >= 0 kW")
        self.advance(now)
        self._limit_kw = limit_kw
        self._last_command_t = now

    # -- what the registers show ----------------------------------------------------------------
    @property
    def p_kw(self) -> float:
        """Site convention: consumption is negative."""
        return -self.consumption_kw(self._t)

    @property
    def consumed_kwh(self) -> float:
        return self._consumed_kwh

    @property
    def rebound_owed_kwh(self) -> float:
        return self._rebound_owed_kwh

    @property
    def limit_kw(self) -> float | None:
        return None if self._lease_over(self._t) else self._limit_kw
