"""Flexible-load physics for the simulator: no I/O and no clock reads.

A load draws its demand: a baseline profile (linear between (second-of-day, kW) points) plus
noise. Part of it (`curtailable_share`) can be shed, either by a continuous power limit or, for
relay-switched loads, all at once. Energy shed is partly owed back: after a release, the load
draws `rebound_share` of it on top of its demand, spread over `rebound_s` (a water heater
reheating). Power follows the site convention, so consumption is negative.

A load with a consumption setpoint (control "setpoint": an EV charger, a heat pump with a power
input) draws what it is told: less, down to its firm part, or more, up to `max_extra_kw`
above its demand while its buffer has room. The buffer (a thermal store, a car's energy need)
takes `extra_buffer_kwh`; once full the load draws only its demand, so it cannot draw more
forever. What it stored is given back after a release: it draws less than its demand (down to
its firm part) until the buffer is empty, spread over `rebound_s`.

A command does not take effect at once: what the load draws away from its demand (shed, or
drawn extra) follows what it was told through a power stage (response.py): a delay, a ramp
and a first-order lag (a heat pump's compressor and water circuit). Its own demand is not
delayed, so an uncommanded load draws its profile, as declared. What it owes back or stores
follows what it really drew.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from flexedge.controller.core.kinds import SECONDS_PER_DAY, profile_kw
from flexedge.simulators.devices.response import STEP_S, Response


class LoadModel:
    def __init__(
        self,
        *,
        profile: Sequence[tuple[float, float]],
        curtailable_share: float,
        control: Literal["limit", "relay", "setpoint"],
        noise_kw: float = 0.0,
        rebound_share: float = 0.0,
        rebound_s: float = 600.0,
        setpoint_timeout_s: float = 10.0,
        seed: int = 0,
        now: float = 0.0,
        max_extra_kw: float = 0.0,
        extra_buffer_kwh: float = 0.0,
        utc_offset_s: float = 0.0,
        response_delay_s: float = 0.0,
        ramp_kw_per_s: float | None = None,
        lag_s: float = 0.0,
    ) -> None:
        if not profile or any(kw < 0 for _, kw in profile):
            raise ValueError("profile needs at least one (second_of_day, kW >= 0) point")
        if not 0.0 <= curtailable_share <= 1.0 or not 0.0 <= rebound_share <= 1.0:
            raise ValueError("curtailable_share and rebound_share must be in [0, 1]")
        if rebound_s <= 0 or setpoint_timeout_s <= 0 or noise_kw < 0:
            raise ValueError("rebound_s and setpoint_timeout_s must be > 0, noise_kw >= 0")
        if max_extra_kw < 0 or extra_buffer_kwh < 0:
            raise ValueError("max_extra_kw and extra_buffer_kwh must be >= 0")
        if max_extra_kw > 0 and control != "setpoint":
            raise ValueError("only a load with a consumption setpoint can draw more")
        self.max_extra_kw = max_extra_kw
        # `now` + this is UTC wall time: the profile's second of day (sim_clock).
        self.utc_offset_s = utc_offset_s
        self.extra_buffer_kwh = extra_buffer_kwh
        self._profile = tuple((float(t) % SECONDS_PER_DAY, float(kw)) for t, kw in profile)
        self.curtailable_share = curtailable_share
        self.control = control
        self.noise_kw = noise_kw
        self.rebound_share = rebound_share
        self.rebound_s = rebound_s
        self.timeout_s = setpoint_timeout_s
        self.seed = seed
        self._t = now
        # The command in kW of consumption (>= 0): a cap, or for control "setpoint" what to
        # draw; None = released.
        self._limit_kw: float | None = None
        self._last_command_t = now
        # > 0: rebound energy owed (drawn back after a release); < 0: extra energy stored in
        # the buffer (given back after a release by drawing less).
        self._owed_kwh = 0.0
        self._consumed_kwh = 0.0
        # What the load draws away from its demand, through its power stage (None: at once).
        self._stage: Response | None = None
        if response_delay_s or ramp_kw_per_s or lag_s:
            self._stage = Response(
                delay_s=response_delay_s, ramp_kw_per_s=ramp_kw_per_s, lag_s=lag_s, now=now
            )
        self._stage_target_kw = 0.0

    # -- demand -----------------------------------------------------------------------------
    def profile_kw(self, now: float) -> float:
        """The declared baseline at `now`, looked up at that instant's UTC second of day as
        the controller does."""
        return profile_kw(self._profile, now + self.utc_offset_s)

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
        """kW drawn at `now` (>= 0): demand, and the part of the command's effect the power
        stage has reached; never below the firm part."""
        if self._stage is None:
            return self.wanted_kw(now)
        return self._drawn_kw(self.demand_kw(now), self._stage.output(now))

    def _drawn_kw(self, demand: float, away_kw: float) -> float:
        """Demand plus what the power stage has taken it away by, never below the firm part."""
        return max(demand * (1.0 - self.curtailable_share), demand + away_kw)

    def wanted_kw(self, now: float) -> float:
        """kW the command asks for at `now` (>= 0): demand under the command, never below the
        firm part. What is drawn, with a power stage that takes its time to get there."""
        demand = self.demand_kw(now)
        firm = demand * (1.0 - self.curtailable_share)
        command = None if self._lease_over(now) else self._limit_kw
        if command is None:
            # Released: draw back owed rebound, or give back what the buffer stored.
            return max(firm, demand + self._owed_kwh * self.rebound_share_rate())
        if self.control == "relay":
            return firm if command < demand else demand
        if self.control == "limit" or command <= demand:
            return max(firm, min(demand, command))
        if self.buffer_room_kwh() <= 0:
            return demand  # the buffer is full: nothing more to take
        return min(command, demand + self.max_extra_kw)

    def buffer_room_kwh(self) -> float:
        """Extra energy the buffer still takes (owed rebound is drawn first)."""
        return self.extra_buffer_kwh + self._owed_kwh if self.max_extra_kw > 0 else 0.0

    def rebound_share_rate(self) -> float:
        """Per-hour rate at which owed rebound energy is drawn (spread over rebound_s)."""
        return 3600.0 / self.rebound_s

    def advance(self, now: float) -> None:
        """Integrate to `now` in 1-s steps (demand noise changes every second), and in steps
        of STEP_S while the power stage moves."""
        if now < self._t:
            raise ValueError("time went backwards")
        while self._t < now:
            t = self._t
            step = min(now - t, 1.0 - (t % 1.0) or 1.0)
            demand = self.demand_kw(t)
            if self._stage is None:
                drawn = self.wanted_kw(t)
            else:
                target = self.wanted_kw(t) - demand
                if target != self._stage_target_kw:
                    self._stage.command(target, t)
                    self._stage_target_kw = target
                if not self._stage.idle:
                    step = min(step, (math.floor(t / STEP_S + 1e-9) + 1) * STEP_S - t)
                mean = (self._stage.output(t) + self._stage.output(t + step)) / 2
                drawn = self._drawn_kw(demand, mean)
            commanded = not self._lease_over(t) and self._limit_kw is not None
            self._account(drawn, demand, commanded, step / 3600.0)
            self._t = t + step

    def _account(self, drawn: float, demand: float, commanded: bool, hours: float) -> None:
        """Energy drawn, and owed back or stored, over `hours` drawing `drawn` kW."""
        self._consumed_kwh += drawn * hours
        gap = (drawn - demand) * hours  # > 0: drawn more than the demand
        if gap < 0 and (commanded or self._owed_kwh >= 0):
            # Shed (on command, or still on its way back after a release): a share owed back.
            self._owed_kwh += -gap * self.rebound_share
        elif gap > 0 and (commanded or self._owed_kwh < 0):
            # Drawn more (on command, or still on its way down): into the buffer, never
            # beyond what it holds.
            self._owed_kwh = max(-self.extra_buffer_kwh, self._owed_kwh - gap)
        elif self._owed_kwh > 0:  # released: drawing back what it owes
            self._owed_kwh = max(0.0, self._owed_kwh - gap)
        elif self._owed_kwh < 0:  # released: giving back what it stored
            self._owed_kwh = min(0.0, self._owed_kwh - gap)

    def command_limit(self, limit_kw: float | None, now: float) -> None:
        """Cap consumption at `limit_kw` (relay loads: any cap below demand opens the relay;
        setpoint loads draw `limit_kw`, less or more than their demand)."""
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
        return max(0.0, self._owed_kwh)

    @property
    def stored_extra_kwh(self) -> float:
        """Extra energy in the buffer, not yet given back."""
        return max(0.0, -self._owed_kwh)

    @property
    def limit_kw(self) -> float | None:
        return None if self._lease_over(self._t) else self._limit_kw
