"""Metering: energy delivered against a baseline, attributed to commitments.

Between two telemetry samples of a device, power is taken as linear (trapezoid rule). Each
interval's measured energy is cut at commitment window edges and shared among the commitments
active on the device by the power each was allocated; whatever they did not get (over- or
under-delivery) is shared by the size of their allocation, so the parts always add up to what
was measured. An interval longer than `max_gap_s` is a gap: nothing is counted across it and
the commitment's coverage shows it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from flexedge.controller.core.dispatch import spread_clip


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float
    delta_kw: float  # measured power minus the baseline


@dataclass(frozen=True, slots=True)
class Attribution:
    """What one interval of one device added, per commitment."""

    energy_kwh: dict[str, float] = field(default_factory=dict)
    covered_s: dict[str, float] = field(default_factory=dict)
    measured_kwh: float = 0.0  # all energy of the interval, attributed or not


def _value_at(a: Sample, b: Sample, ts: float) -> float:
    if b.ts == a.ts:
        return b.delta_kw
    return a.delta_kw + (b.delta_kw - a.delta_kw) * (ts - a.ts) / (b.ts - a.ts)


def trapezoid_kwh(a: Sample, b: Sample, start: float, end: float) -> float:
    """Energy between `start` and `end` (inside [a.ts, b.ts]) of the line through a and b."""
    if end <= start:
        return 0.0
    return (_value_at(a, b, start) + _value_at(a, b, end)) / 2.0 * (end - start) / 3600.0


def attribute(
    prev: Sample,
    cur: Sample,
    windows: Mapping[str, tuple[float, float]],
    allocations: Mapping[str, float],
    max_gap_s: float,
) -> Attribution:
    """Split the energy measured between two samples among the commitments on the device.

    `windows` are the commitments on this device; `allocations` the kW each was given by the
    last dispatch (a commitment with no allocation still gets a share if it is the only one).
    """
    if cur.ts <= prev.ts or cur.ts - prev.ts > max_gap_s:
        return Attribution()
    edges = {prev.ts, cur.ts}
    for start, end in windows.values():
        edges.update(t for t in (start, end) if prev.ts < t < cur.ts)
    points = sorted(edges)
    energy: dict[str, float] = {}
    covered: dict[str, float] = {}
    measured = 0.0
    for seg_start, seg_end in itertools.pairwise(points):
        seg_kwh = trapezoid_kwh(prev, cur, seg_start, seg_end)
        measured += seg_kwh
        active = [cid for cid, (ws, we) in windows.items() if ws <= seg_start and seg_end <= we]
        if not active:
            continue
        hours = (seg_end - seg_start) / 3600.0
        requests = {cid: allocations.get(cid, 0.0) for cid in active}
        if all(p == 0.0 for p in requests.values()):
            # Nobody asked for power here (e.g. all clipped to 0): share what was measured.
            split = {cid: seg_kwh / len(active) for cid in active}
        else:
            split = {cid: kw * hours for cid, kw in spread_clip(requests, seg_kwh / hours).items()}
        for cid, kwh in split.items():
            energy[cid] = energy.get(cid, 0.0) + kwh
            covered[cid] = covered.get(cid, 0.0) + (seg_end - seg_start)
    return Attribution(energy, covered, measured)


def per_slot(
    prev: Sample, cur: Sample, slot_seconds: float, max_gap_s: float
) -> dict[float, tuple[float, float]]:
    """The interval's measured energy and covered seconds, split by market slot:
    {slot start: (kWh, seconds)}. A gap counts nothing, as for commitments."""
    if cur.ts <= prev.ts or cur.ts - prev.ts > max_gap_s:
        return {}
    result: dict[float, tuple[float, float]] = {}
    start = prev.ts
    while start < cur.ts:
        slot = start - start % slot_seconds
        end = min(cur.ts, slot + slot_seconds)
        kwh, covered = result.get(slot, (0.0, 0.0))
        result[slot] = (kwh + trapezoid_kwh(prev, cur, start, end), covered + end - start)
        start = end
    return result
