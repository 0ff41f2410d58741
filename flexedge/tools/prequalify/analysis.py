"""A prequalification test's profile and what its samples say: plain data and arithmetic.

A profile is a list of (time from start, target kW) steps, held until the next; the device is
sampled while it runs. For every step change the analysis finds how long the device took to
start moving (delay), to cover 90 % and 100 % of the change, and how far it overshot; over
the whole test, the tracking error per second and the energy against the profile's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Profile = list[tuple[float, float]]  # (seconds from start, target kW), each held until the next
Sample = tuple[float, float]  # (seconds from start, measured kW)

STARTED = 0.05  # moved by this share of the change: it has started to respond
SETTLED = 0.02  # within this share of the change of the target: it got there


def build_profile(
    kind: str, up_kw: float, down_kw: float, hold_s: float, base_kw: float = 0.0
) -> Profile:
    """`step`: up, hold, back. `double-step`: up, hold, down, hold, back. `ramp`: up in a
    ramp over one hold, hold, down the same way. Each starts and ends with a hold at the
    base; up and down are changes from it."""
    return [(t, base_kw + kw) for t, kw in _shape(kind, up_kw, down_kw, hold_s)]


def _shape(kind: str, up_kw: float, down_kw: float, hold_s: float) -> Profile:
    if kind == "step":
        return [(0.0, 0.0), (hold_s, up_kw), (2 * hold_s, 0.0), (3 * hold_s, 0.0)]
    if kind == "double-step":
        return [
            (0.0, 0.0),
            (hold_s, up_kw),
            (2 * hold_s, down_kw),
            (3 * hold_s, 0.0),
            (4 * hold_s, 0.0),
        ]
    if kind == "ramp":
        steps = 10
        rise = [(hold_s + hold_s * i / steps, up_kw * i / steps) for i in range(1, steps + 1)]
        fall = [
            (3 * hold_s + hold_s * i / steps, up_kw * (1 - i / steps)) for i in range(1, steps + 1)
        ]
        return [(0.0, 0.0), *rise, *fall, (5 * hold_s, 0.0)]
    raise ValueError(f"unknown profile {kind!r}: step, double-step or ramp")


def target_at(profile: Profile, t: float) -> float:
    value = profile[0][1]
    for start, kw in profile:
        if start > t:
            break
        value = kw
    return value


@dataclass(frozen=True)
class StepResponse:
    at_s: float  # when the target changed, from the start
    from_kw: float
    to_kw: float
    delay_s: float | None  # None: it never started to move
    to_90_s: float | None
    to_100_s: float | None
    overshoot_share: float  # beyond the target, as a share of the change


@dataclass(frozen=True)
class Result:
    steps: tuple[StepResponse, ...]
    tracking_error_kw: tuple[float, ...]  # mean |measured - target| in each second
    # Energy away from the profile's base (its first level): (target, measured) kWh, up
    # (more injection, less consumption) and down apart, so a double step does not cancel.
    up_kwh: tuple[float, float]
    down_kwh: tuple[float, float]


def _first(
    samples: Sequence[Sample], after: float, until: float, test: Callable[[float], bool]
) -> float | None:
    for t, p in samples:
        if after <= t < until and test(p):
            return t - after
    return None


def _step_response(
    samples: Sequence[Sample], t0: float, t1: float, a: float, b: float
) -> StepResponse:
    """How the device followed the change from `a` to `b` at `t0`, until `t1`."""
    size = abs(b - a)
    sign = 1.0 if b > a else -1.0
    inside = [p for t, p in samples if t0 <= t < t1]
    beyond = max((sign * (p - b) for p in inside), default=0.0)
    return StepResponse(
        t0,
        a,
        b,
        _first(samples, t0, t1, lambda p: sign * (p - a) >= STARTED * size),
        _first(samples, t0, t1, lambda p: sign * (p - a) >= 0.9 * size),
        _first(samples, t0, t1, lambda p: abs(p - b) <= SETTLED * size),
        max(0.0, beyond) / size,
    )


def analyse(profile: Profile, samples: Sequence[Sample]) -> Result:
    """The step responses of every change of at least a fifth of the profile's span (not
    the stairs of a ramp), and the totals. Samples must be in time order."""
    changes = [
        (t, before, after)
        for (_, before), (t, after) in itertools.pairwise(profile)
        if after != before
    ]
    levels = [kw for _, kw in profile]
    span = max(levels) - min(levels)
    ends = [t for t, _, _ in changes[1:]] + [samples[-1][0] + 1 if samples else 0.0]
    steps = []
    for (t0, a, b), t1 in zip(changes, ends, strict=True):
        if abs(b - a) >= 0.2 * span:  # a ramp's stair responds as the ramp, not a step
            steps.append(_step_response(samples, t0, t1, a, b))
    errors: dict[int, list[float]] = {}
    for t, p in samples:
        errors.setdefault(int(t), []).append(abs(p - target_at(profile, t)))
    per_second = tuple(sum(e) / len(e) for _, e in sorted(errors.items()))
    base = profile[0][1]
    target = [(t, target_at(profile, t) - base) for t, _ in samples]
    measured = [(t, p - base) for t, p in samples]
    return Result(
        tuple(steps),
        per_second,
        (_energy(target, positive=True), _energy(measured, positive=True)),
        (_energy(target, positive=False), _energy(measured, positive=False)),
    )


def _energy(samples: Sequence[Sample], positive: bool) -> float:
    """Trapezoids over the samples of their positive (or negative) part, kWh."""
    total = 0.0
    for (t0, p0), (t1, p1) in itertools.pairwise(samples):
        v0, v1 = (max(0.0, p0), max(0.0, p1)) if positive else (min(0.0, p0), min(0.0, p1))
        total += (v0 + v1) / 2 * (t1 - t0) / 3600
    return total if math.isfinite(total) else float("nan")


@dataclass(frozen=True)
class ResponseMeasured:
    """What dispatch plans with (the site file's `response` block): the longest delay of the
    steps and the slowest ramp, each step's taken from 5 % to 90 % of its change. None for
    the ramp when every step covered that in under two samples: at once, at this rate."""

    delay_s: float
    ramp_kw_per_s: float | None


def response_of(result: Result, sample_s: float) -> ResponseMeasured | None:
    """The response figures of a test, or None when a step never got to 90 % (the device
    did not follow, and has nothing to plan with)."""
    if not result.steps or any(s.delay_s is None or s.to_90_s is None for s in result.steps):
        return None
    delay = max(s.delay_s or 0.0 for s in result.steps)
    ramps = [
        (0.9 - STARTED) * abs(s.to_kw - s.from_kw) / rise
        for s in result.steps
        if (rise := (s.to_90_s or 0.0) - (s.delay_s or 0.0)) >= 2 * sample_s
    ]
    return ResponseMeasured(round(delay, 2), round(min(ramps), 2) if ramps else None)
