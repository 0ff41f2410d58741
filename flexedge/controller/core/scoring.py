"""How well a commitment's assets followed their targets, on a 1-second grid.

Input is what the log holds, as plain data: per asset, the dispatch rows (the kW above
baseline each commitment was allocated, in force until the next row: a step function) and
the measured power minus the baseline (linear between samples, as metering takes it). Both
are sampled at the middle of each second of the commitment's window. The middle, not the
edge: the window opens at the moment of acceptance and its first setpoint row is logged a
fraction of a millisecond later, so an edge sample would see "nothing requested yet".

Two measures:
- tracking quality: the share of samples where |response - target| <= 5 % of |target|. The
  tolerance never drops below 5 % of the window's mean |target|, so a target at or near 0 does
  not demand an exact 0 (and the rule has no jump as the target crosses 0);
- a PJM-style performance score, the mean of a correlation, a delay and a precision score
  (PJM's RegD performance score is the mean of these three; the details here are ours, for
  windows of seconds to hours, not PJM's exact method).

Samples not backed by telemetry (before the first sample, across a gap longer than
`max_gap_s`) are left out of every measure; coverage in the delivery report shows them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flexedge.controller.core.dispatch import spread_clip

DT_S = 1.0
TOLERANCE = 0.05
DELAY_MAX_S = 10.0
# A target whose standard deviation is below 1 % of its mean magnitude has no shape worth
# correlating with: the closed loop trims a flat request by fractions of a percent, which is
# the size of a real meter's noise. Correlation and delay are then n/a (None).
FLAT_SHARE = 0.01
# Correlations within this of the best count as equal; the shortest such delay wins.
TIE = 1e-9
# Fewest target/response pairs a correlation is taken from.
MIN_PAIRS = 2

T = TypeVar("T")
Allocations = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class AssetTrace:
    """One asset's log around a window, each sequence sorted by time."""

    allocations: Sequence[tuple[float, Allocations]]  # setpoint rows: (ts, {commitment: kW})
    measured: Sequence[tuple[float, float]]  # telemetry: (ts, measured kW minus baseline)
    # A backup counts only while it was allocated the commitment (as metering counts it).
    backup: bool = False


@dataclass(frozen=True, slots=True)
class Score:
    """Every measure in [0, 1], or None when it does not apply (see the module doc)."""

    samples: int  # 1-s samples in the window
    scored: int  # of them backed by telemetry on every asset
    tracking: float | None
    correlation: float | None
    delay: float | None
    delay_s: float | None  # the delay of the best correlation
    precision: float | None
    total: float | None  # mean of correlation, delay and precision (those that apply)


def sample_times(start: float, end: float, dt: float = DT_S) -> list[float]:
    """The middle of each dt-long bin of [start, end); a last, shorter bin keeps its middle."""
    times = []
    left = start
    while left < end:
        right = min(end, left + dt)
        times.append((left + right) / 2.0)
        left = start + len(times) * dt  # from start each time: no drift over long windows
    return times


def step_at(points: Sequence[tuple[float, T]], times: Sequence[float]) -> list[T | None]:
    """The value of the last point at or before each time; None before the first point."""
    stamps = [ts for ts, _ in points]
    out: list[T | None] = []
    for t in times:
        i = bisect.bisect_right(stamps, t)
        out.append(points[i - 1][1] if i else None)
    return out


def linear_at(
    points: Sequence[tuple[float, float]], times: Sequence[float], max_gap_s: float
) -> list[float | None]:
    """Linear between the samples around each time; None outside them or across a gap."""
    stamps = [ts for ts, _ in points]
    out: list[float | None] = []
    for t in times:
        i = bisect.bisect_right(stamps, t)
        if i and stamps[i - 1] == t:
            out.append(points[i - 1][1])
        elif 0 < i < len(points) and stamps[i] - stamps[i - 1] <= max_gap_s:
            (t0, v0), (t1, v1) = points[i - 1], points[i]
            out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
        else:
            out.append(None)
    return out


def commitment_share(allocations: Allocations, commitment_id: str, measured_kw: float) -> float:
    """The part of an asset's measured delta that belongs to one commitment.

    The same split as metering: by allocation (spread_clip), evenly when everyone on the asset
    was allocated 0. With no allocation on record the asset serves nobody else, so its whole
    deviation from baseline counts against the commitment.
    """
    if not allocations:
        return measured_kw
    if commitment_id not in allocations:
        return 0.0
    if all(kw == 0.0 for kw in allocations.values()):
        return measured_kw / len(allocations)
    return spread_clip(allocations, measured_kw)[commitment_id]


def commitment_series(
    commitment_id: str,
    window: tuple[float, float],
    traces: Mapping[str, AssetTrace],
    max_gap_s: float,
    dt: float = DT_S,
) -> tuple[list[float], list[float], list[float | None]]:
    """(times, target, response) of one commitment, summed over its assets.

    A sample where any asset has no telemetry is None in the response: a partial sum would
    look like under-delivery.
    """
    times = sample_times(window[0], window[1], dt)
    target = [0.0] * len(times)
    response: list[float | None] = [0.0] * len(times)
    for trace in traces.values():
        allocations = step_at(trace.allocations, times)
        measured = linear_at(trace.measured, times, max_gap_s)
        for k, (alloc, m) in enumerate(zip(allocations, measured, strict=True)):
            alloc = alloc or {}
            if trace.backup and commitment_id not in alloc:
                continue
            target[k] += alloc.get(commitment_id, 0.0)
            r = response[k]
            response[k] = (
                None if r is None or m is None else (r + commitment_share(alloc, commitment_id, m))
            )
    return times, target, response


def _flat(values: Sequence[float]) -> bool:
    return max(values) - min(values) <= 1e-9 * max(abs(v) for v in values)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Correlation of two series; None if xs is flat (nothing to follow), 0 if only ys is."""
    if len(xs) < 2 or _flat(xs):
        return None
    if _flat(ys):
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0.0:  # underflow of a tiny but not flat series
        return None
    if syy == 0.0:
        return 0.0
    # Two square roots, not one of the product: the product can underflow to 0.
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx) / math.sqrt(syy)))


def _best_correlation(
    target: Sequence[float], response: Sequence[float | None], max_lag: int
) -> tuple[float, int] | None:
    """(best correlation, its lag in samples) of the response shifted back by 0..max_lag.

    A lag is only tried while it keeps at least half of the scored samples paired (and
    MIN_PAIRS): in a window of seconds, a long lag leaves two or three pairs, which
    correlate perfectly by chance.
    """
    found: list[tuple[float, int]] = []
    scored = sum(r is not None for r in response)
    for lag in range(max_lag + 1):
        pairs = [
            (target[k], r) for k in range(len(target) - lag) if (r := response[k + lag]) is not None
        ]
        if len(pairs) < max(MIN_PAIRS, (scored + 1) // 2):
            break
        c = pearson([p[0] for p in pairs], [p[1] for p in pairs])
        if c is not None:
            found.append((c, lag))
    if not found:
        return None
    best = max(c for c, _ in found)
    return best, min(lag for c, lag in found if c >= best - TIE)


def score(
    target: Sequence[float],
    response: Sequence[float | None],
    dt: float = DT_S,
    delay_max_s: float = DELAY_MAX_S,
) -> Score:
    """Score a response against its target, both sampled every dt seconds."""
    max_lag = round(delay_max_s / dt)
    if max_lag < 1:
        raise ValueError(f"delay_max_s ({delay_max_s}) must be at least one sample ({dt} s)")
    pairs = [(t, r) for t, r in zip(target, response, strict=True) if r is not None]
    none = Score(len(target), len(pairs), None, None, None, None, None, None)
    if not pairs:
        return none
    mean_abs = sum(abs(t) for t, _ in pairs) / len(pairs)
    if mean_abs == 0.0:
        return none  # nothing was requested: no measure has a scale
    tracking = sum(abs(r - t) <= TOLERANCE * max(abs(t), mean_abs) for t, r in pairs) / len(pairs)
    error = sum(abs(r - t) for t, r in pairs) / len(pairs)
    precision = max(0.0, 1.0 - error / mean_abs)
    correlation = delay = delay_s = None
    mean = sum(t for t, _ in pairs) / len(pairs)
    spread = math.sqrt(sum((t - mean) ** 2 for t, _ in pairs) / len(pairs))
    best = _best_correlation(target, response, max_lag) if spread > FLAT_SHARE * mean_abs else None
    if best is not None:
        c, lag = best
        correlation = max(0.0, c)
        # A response that never moves with the target has no delay worth crediting.
        delay = (max_lag - lag) / max_lag if c > 0.0 else 0.0
        delay_s = lag * dt
    parts = [p for p in (correlation, delay, precision) if p is not None]
    return Score(
        len(target),
        len(pairs),
        tracking,
        correlation,
        delay,
        delay_s,
        precision,
        sum(parts) / len(parts),
    )


def score_commitment(
    commitment_id: str,
    window: tuple[float, float],
    traces: Mapping[str, AssetTrace],
    max_gap_s: float,
    dt: float = DT_S,
    delay_max_s: float = DELAY_MAX_S,
) -> Score:
    _, target, response = commitment_series(commitment_id, window, traces, max_gap_s, dt)
    return score(target, response, dt, delay_max_s)
