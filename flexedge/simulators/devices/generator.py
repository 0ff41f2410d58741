"""Generator physics for the simulator: no I/O and no clock reads.

A dispatchable generator runs between `min_kw` and `max_kw` or is stopped. Its output moves
toward the setpoint at `ramp_kw_per_s`; a setpoint below `min_kw` stops it (it ramps down and
stops), a positive setpoint starts it (it ramps up from 0 through `min_kw`). When the setpoint
lease runs out it returns to its fallback output (0 = stop). Output is injection, so p > 0.
A setpoint takes effect `response_delay_s` after it is written (the governor's and the
controller's response time); its lease counts from then.
"""

from __future__ import annotations

import math
from collections import deque


class GeneratorModel:
    def __init__(
        self,
        *,
        min_kw: float,
        max_kw: float,
        ramp_kw_per_s: float,
        setpoint_timeout_s: float = 10.0,
        fallback_kw: float = 0.0,
        now: float = 0.0,
        response_delay_s: float = 0.0,
    ) -> None:
        if not 0.0 <= min_kw < max_kw or ramp_kw_per_s <= 0 or setpoint_timeout_s <= 0:
            raise ValueError("need 0 <= min_kw < max_kw, ramp > 0 and timeout > 0")
        if not (math.isfinite(response_delay_s) and response_delay_s >= 0):
            raise ValueError(f"response_delay_s must be >= 0, got {response_delay_s}")
        self.response_delay_s = response_delay_s
        self._pending: deque[tuple[float, float]] = deque()  # (takes effect at, setpoint)
        self.min_kw = min_kw
        self.max_kw = max_kw
        self.ramp_kw_per_s = ramp_kw_per_s
        self.timeout_s = setpoint_timeout_s
        self.fallback_kw = fallback_kw
        self._t = now
        self._p = 0.0
        self._setpoint = fallback_kw
        self._last_command_t = now
        self._energy_kwh = 0.0

    def target_kw(self, now: float) -> float:
        """Where the output is heading: the setpoint clamped to what the machine can run at."""
        wanted = (
            self.fallback_kw if now - self._last_command_t >= self.timeout_s else self._setpoint
        )
        if wanted < self.min_kw:
            return 0.0
        return min(wanted, self.max_kw)

    def advance(self, now: float) -> None:
        """Ramp exactly (piecewise linear) to `now`, taking each written setpoint when it
        takes effect; the lease may end inside the interval."""
        if now < self._t:
            raise ValueError("time went backwards")
        while self._pending and self._pending[0][0] <= now:
            at, setpoint = self._pending.popleft()
            self._run_to(at)
            self._setpoint, self._last_command_t = setpoint, at
        self._run_to(now)

    def _run_to(self, now: float) -> None:
        lease_end = self._last_command_t + self.timeout_s
        if self._t < lease_end < now:
            self._ramp_to(lease_end)
        self._ramp_to(now)

    def _ramp_to(self, now: float) -> None:
        target = self.target_kw(self._t)
        dt = now - self._t
        reach = abs(target - self._p) / self.ramp_kw_per_s
        if reach >= dt:
            step = math.copysign(self.ramp_kw_per_s * dt, target - self._p)
            self._energy_kwh += (self._p + step / 2) * dt / 3600.0
            self._p += step
        else:
            self._energy_kwh += (self._p + target) / 2 * reach / 3600.0
            self._energy_kwh += target * (dt - reach) / 3600.0
            self._p = target
        self._t = now

    def command(self, p_kw: float, now: float) -> None:
        if math.isnan(p_kw) or math.isinf(p_kw):
            raise ValueError("setpoint must be finite")
        self.advance(now)
        self._pending.append((now + self.response_delay_s, max(0.0, p_kw)))
        self.advance(now)  # no delay: at once

    @property
    def p_kw(self) -> float:
        return self._p

    @property
    def running(self) -> bool:
        return self._p > 0.0 or self.target_kw(self._t) > 0.0

    @property
    def energy_kwh(self) -> float:
        return self._energy_kwh
