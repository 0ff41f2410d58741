"""How a simulated device's power stage follows a setpoint: like hardware, not at once.

A new setpoint takes effect after `delay_s` (the inverter's or controller's response time),
then power moves toward it at `ramp_kw_per_s` at most (None: in one step), through a
first-order lag of time constant `lag_s` (0: none; a heat pump's compressor and water
circuit). No I/O and no clock reads: `output(now)` integrates up to `now` in fixed steps of
STEP_S aligned to absolute time, so the result does not depend on how often it is asked.
"""

from __future__ import annotations

import math
import random
from collections import deque

STEP_S = 0.05


class Response:
    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        ramp_kw_per_s: float | None = None,
        lag_s: float = 0.0,
        initial_kw: float = 0.0,
        now: float = 0.0,
    ) -> None:
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        if ramp_kw_per_s is not None and not (math.isfinite(ramp_kw_per_s) and ramp_kw_per_s > 0):
            raise ValueError(f"ramp_kw_per_s must be > 0, got {ramp_kw_per_s}")
        if not (math.isfinite(lag_s) and lag_s >= 0):
            raise ValueError(f"lag_s must be >= 0, got {lag_s}")
        self.delay_s = delay_s
        self.ramp_kw_per_s = ramp_kw_per_s
        self.lag_s = lag_s
        self._pending: deque[tuple[float, float]] = deque()  # (takes effect at, target)
        self._target = initial_kw
        self._ramped = initial_kw  # after the ramp limit, before the lag
        self._out = initial_kw
        self._t = now

    @property
    def idle(self) -> bool:
        """No transient under way: the output is the target, nothing pending."""
        return not self._pending and self._out == self._target == self._ramped

    def command(self, target_kw: float, now: float) -> None:
        self.output(now)
        self._pending.append((now + self.delay_s, float(target_kw)))

    def output(self, now: float) -> float:
        """The power stage's output at `now` (kW). The state moves in whole steps of the
        grid; the part of a step up to `now` is looked at, not kept, so that asking more
        often changes nothing."""
        if now < self._t - 1e-9:
            raise ValueError(f"time went backwards: {now} < {self._t}")
        now = max(now, self._t)  # a grid point a rounding error past `now` is `now`
        grid = min(now, math.floor(now / STEP_S + 1e-9) * STEP_S)
        while self._t < grid:
            if self.idle:
                self._t = grid
                break
            self._step(min(grid, (math.floor(self._t / STEP_S + 1e-9) + 1) * STEP_S))
        if self.ramp_kw_per_s is None and self.lag_s == 0:
            while self._pending and self._pending[0][0] <= now:  # no dynamics: at once
                self._target = self._ramped = self._out = self._pending.popleft()[1]
            return self._out
        saved = (self._target, self._ramped, self._out, self._t, deque(self._pending))
        self._step(now)
        out = self._out
        self._target, self._ramped, self._out, self._t, self._pending = saved
        return out

    def _step(self, to: float) -> None:
        dt = to - self._t
        while self._pending and self._pending[0][0] <= self._t:
            self._target = self._pending.popleft()[1]
        if self.ramp_kw_per_s is None:
            self._ramped = self._target
        else:
            room = self.ramp_kw_per_s * dt
            self._ramped += max(-room, min(room, self._target - self._ramped))
        if self.lag_s == 0:
            self._out = self._ramped
        elif dt > 0:
            self._out += (self._ramped - self._out) * (1 - math.exp(-dt / self.lag_s))
            if abs(self._out - self._ramped) < 1e-6:
                self._out = self._ramped
        self._t = to


class NoisyMeter:
    """A meter's reading of a power: the power plus gaussian noise of `noise_kw` (seeded, so
    a run is repeatable); 0: the power as it is."""

    def __init__(self, noise_kw: float, seed: int) -> None:
        if not (math.isfinite(noise_kw) and noise_kw >= 0):
            raise ValueError(f"noise_kw must be >= 0, got {noise_kw}")
        self.noise_kw = noise_kw
        self._rng = random.Random(seed)

    def read(self, kw: float) -> float:
        return kw + self._rng.gauss(0.0, self.noise_kw) if self.noise_kw else kw
