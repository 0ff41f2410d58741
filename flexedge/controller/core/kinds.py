"""What each device kind may be commanded to, for the next control period.

Every function returns the closed range [p_min, p_max] of setpoints (site convention, kW) that
keep the device inside its limits for `horizon_s`, and the dispatcher never leaves it. A relay
load also has `steps`: the only values its relay can produce.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from flexedge.controller.core.capability import Headroom

# A load setpoint this close to its baseline is no curtailment: release it instead of
# capping it at today's demand (which would curtail it if demand rose).
RELEASE_BAND_KW = 1e-3


@dataclass(frozen=True, slots=True)
class Feasible:
    p_min: float
    p_max: float
    baseline_kw: float
    steps: tuple[float, ...] = ()
    # An open interval inside [p_min, p_max] the device cannot run in (a generator between
    # stopped and its minimum output).
    gap: tuple[float, float] | None = None
    # What the device could reach given time, when its ramp keeps it inside less for this
    # period (None: the same as this). A shortfall only this period's ramp causes is the
    # device's own to catch up; only one beyond this goes to other assets.
    given_time: Feasible | None = None

    @property
    def lasting(self) -> Feasible:
        return self.given_time or self

    def clip(self, p_kw: float) -> float:
        """The allowed setpoint nearest to `p_kw`."""
        p = min(max(p_kw, self.p_min), self.p_max)
        if self.steps:
            return min(self.steps, key=lambda s: (abs(s - p), s))
        if self.gap is not None and self.gap[0] < p < self.gap[1]:
            low, high = self.gap
            return low if p - low < high - p else high
        return p

    def toward(self, p_from: float, p_target: float) -> float:
        """The allowed setpoint nearest to `p_target` that does not go past it from `p_from`
        (`p_from` itself when nothing allowed lies in between).

        `clip` may snap past the target (a relay step, the far side of a generator's gap);
        taking up spare room for someone else must never overshoot what was asked.
        """
        low, high = sorted((p_from, p_target))
        candidates = [self.clip(p_target), p_from, *self.steps]
        if self.gap is not None:
            candidates.extend(self.gap)
        inside = [p for p in candidates if low - 1e-9 <= p <= high + 1e-9 and self.allows(p)]
        return min(inside, key=lambda p: abs(p - p_target), default=p_from)

    def allows(self, p_kw: float, tol: float = 1e-9) -> bool:
        if self.steps:
            return any(abs(p_kw - s) <= tol for s in self.steps)
        inside = self.p_min - tol <= p_kw <= self.p_max + tol
        in_gap = self.gap is not None and self.gap[0] + tol < p_kw < self.gap[1] - tol
        return inside and not in_gap


@dataclass(frozen=True, slots=True)
class LoadLimits:
    asset: str
    curtailable_share: float
    relay: bool
    # A load with a consumption setpoint may also be told to draw up to this much more than
    # its demand, until its buffer has taken `extra_buffer_kwh` (0: it cannot draw more).
    max_extra_kw: float = 0.0
    extra_buffer_kwh: float = 0.0


def load_feasible(limits: LoadLimits, demand_kw: float) -> Feasible:
    """A load drawing `demand_kw` (>= 0) may be held anywhere between its firm part and its
    full demand, plus what it can draw more; a relay load only at one of the two."""
    demand = max(0.0, demand_kw)
    firm = demand * (1.0 - limits.curtailable_share)
    if limits.relay:
        return Feasible(p_min=-demand, p_max=-firm, baseline_kw=-demand, steps=(-demand, -firm))
    return Feasible(p_min=-demand - limits.max_extra_kw, p_max=-firm, baseline_kw=-demand)


def load_command(setpoint_kw: float, baseline_kw: float) -> float | None:
    """The command for a load planned at `setpoint_kw` (site sign, <= 0): a cap (or, for a
    load that can draw more, a setpoint above its demand), or None (release) when the plan is
    within RELEASE_BAND_KW of what it draws uncurtailed."""
    if abs(setpoint_kw - baseline_kw) <= RELEASE_BAND_KW:
        return None
    return setpoint_kw


def load_headroom(limits: LoadLimits, demand_kw: float) -> Headroom:
    """A load drawing `demand_kw` can shed its curtailable share of it, and draw up to
    `max_extra_kw` more until its buffer is full (energy-bounded like a battery's charge)."""
    return Headroom(
        limits.curtailable_share * demand_kw,
        limits.max_extra_kw,
        down_kwh=limits.extra_buffer_kwh,
    )


@dataclass(frozen=True, slots=True)
class GeneratorLimits:
    asset: str
    min_kw: float
    max_kw: float
    ramp_kw_per_s: float
    baseline_kw: float = 0.0


def generator_feasible(limits: GeneratorLimits, p_now_kw: float, horizon_s: float) -> Feasible:
    """Setpoints a generator can follow within one horizon of its ramp.

    Below its minimum output it is starting or stopping: the only setpoints are 0 and
    `min_kw`, which it approaches along its ramp. Running, it may move within ramp reach
    inside [min_kw, max_kw], and be told to stop once that reach touches min_kw.
    """
    p_now = max(0.0, p_now_kw)
    given_time = Feasible(
        0.0,
        limits.max_kw,
        limits.baseline_kw,
        gap=(0.0, limits.min_kw) if limits.min_kw > 0 else None,
    )
    if p_now < limits.min_kw:
        return Feasible(
            0.0,
            limits.min_kw,
            limits.baseline_kw,
            steps=(0.0, limits.min_kw),
            given_time=given_time,
        )
    reach = limits.ramp_kw_per_s * max(horizon_s, 0.0)
    high = min(limits.max_kw, p_now + reach)
    # Above max_kw (a device overshooting) max_kw wins over the ramp.
    low = min(max(limits.min_kw, p_now - reach), high)
    if p_now - reach <= limits.min_kw:
        return Feasible(0.0, high, limits.baseline_kw, gap=(0.0, low), given_time=given_time)
    return Feasible(low, high, limits.baseline_kw, given_time=given_time)


def generator_headroom(limits: GeneratorLimits) -> Headroom:
    """Up to max_kw above its schedule; down to a stop below it."""
    return Headroom(limits.max_kw - limits.baseline_kw, limits.baseline_kw)


SECONDS_PER_DAY = 86400.0


def profile_kw(points: tuple[tuple[float, float], ...], ts: float) -> float:
    """A daily profile of (second of day UTC, kW) points at `ts`: linear between points,
    wrapping at midnight; one point is a constant."""
    ordered = sorted(points)
    if len(ordered) == 1:
        return ordered[0][1]
    second = ts % SECONDS_PER_DAY
    prev_t, prev_kw = ordered[-1][0] - SECONDS_PER_DAY, ordered[-1][1]
    for t, kw in [*ordered, (ordered[0][0] + SECONDS_PER_DAY, ordered[0][1])]:
        if second <= t:
            span = t - prev_t
            return prev_kw + (kw - prev_kw) * (second - prev_t) / span if span else kw
        prev_t, prev_kw = t, kw
    return ordered[-1][1]


class MeasuredBaseline:
    """A load's baseline from its own recent consumption, frozen while it is dispatched.

    Outside commitments it is the time-weighted average of the measured power over the last
    `window_s`; from the first sample inside a commitment it keeps the value it had then, so
    the curtailment being measured never lowers its own baseline. Plain data: the caller feeds
    it every sample with an explicit time.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: list[tuple[float, float]] = []
        self._frozen: float | None = None

    def observe(self, ts: float, p_kw: float, dispatched: bool) -> None:
        if dispatched:
            if self._frozen is None:
                self._frozen = self.average(ts)
            return
        self._frozen = None
        self._samples.append((ts, p_kw))
        while len(self._samples) > 2 and self._samples[1][0] <= ts - self.window_s:
            self._samples.pop(0)

    def average(self, ts: float) -> float | None:
        """Trapezoid average over the last `window_s` of undispatched samples up to `ts`
        (after a dispatch that is still the time before it); None before any sample."""
        known = [(t, p) for t, p in self._samples if t <= ts]
        if not known:
            return None
        points = [(t, p) for t, p in known if t >= known[-1][0] - self.window_s]
        if len(points) < 2:
            return points[0][1]
        energy = sum((p0 + p1) / 2 * (t1 - t0) for (t0, p0), (t1, p1) in itertools.pairwise(points))
        span = points[-1][0] - points[0][0]
        return energy / span if span > 0 else points[-1][1]

    def value(self, ts: float) -> float | None:
        return self._frozen if self._frozen is not None else self.average(ts)
