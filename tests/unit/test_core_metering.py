"""Metering on plain data: trapezoids, window edges, gaps, and energy that adds up."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.metering import Sample, attribute, per_slot, trapezoid_kwh
from flexedge.controller.core.model import Progress
from flexedge.controller.core.reports import build_report, delivery_status
from tests.support.core_fixtures import T0, commitment
from tests.support.properties import examples


def test_trapezoid_of_a_ramp() -> None:
    # 0 -> 36 kW over 10 s: 18 kW average, 0.05 kWh.
    assert abs(trapezoid_kwh(Sample(0, 0), Sample(10, 36), 0, 10) - 0.05) < 1e-12


def test_interval_is_cut_at_the_window_end() -> None:
    # Constant 3.6 kW from T0+8 to T0+12, window ends at T0+10: 2 s count, 0.002 kWh.
    result = attribute(
        Sample(T0 + 8, 3.6), Sample(T0 + 12, 3.6), {"c1": (T0, T0 + 10)}, {"c1": 3.6}, max_gap_s=5
    )
    assert abs(result.energy_kwh["c1"] - 0.002) < 1e-12
    assert abs(result.covered_s["c1"] - 2.0) < 1e-9
    assert abs(result.measured_kwh - 0.004) < 1e-12


def test_a_gap_counts_nothing() -> None:
    result = attribute(
        Sample(T0, 3.6), Sample(T0 + 10, 3.6), {"c1": (T0, T0 + 30)}, {"c1": 3.6}, max_gap_s=3
    )
    assert result.energy_kwh == {} and result.covered_s == {}


def test_overlapping_commitments_share_by_allocation() -> None:
    result = attribute(
        Sample(T0, 2.0),
        Sample(T0 + 1, 2.0),
        {"a": (T0, T0 + 30), "b": (T0, T0 + 30)},
        {"a": 3.0, "b": 1.0},
        3,
    )
    total = 2.0 / 3600
    assert abs(result.energy_kwh["a"] - 0.75 * total) < 1e-12
    assert abs(result.energy_kwh["b"] - 0.25 * total) < 1e-12


@settings(max_examples=examples(300))
@given(
    powers=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=40),
    steps=st.lists(st.floats(0.05, 2.0), min_size=40, max_size=40),
    windows=st.lists(st.tuples(st.floats(-5, 40), st.floats(0.5, 40)), min_size=1, max_size=4),
    allocations=st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=4),
)
def test_attributed_energy_adds_up_to_what_was_measured_inside_the_windows(
    powers: list[float],
    steps: list[float],
    windows: list[tuple[float, float]],
    allocations: list[float],
) -> None:
    times = [T0]
    for step in steps[: len(powers) - 1]:
        times.append(times[-1] + step)
    samples = [Sample(t, p) for t, p in zip(times, powers, strict=True)]
    spans = {f"c{i}": (T0 + s, T0 + s + d) for i, (s, d) in enumerate(windows)}
    alloc = {f"c{i}": allocations[i] for i in range(len(windows))}
    progress = {cid: Progress() for cid in spans}
    in_any_window = 0.0
    for prev, cur in itertools.pairwise(samples):
        result = attribute(prev, cur, spans, alloc, max_gap_s=10)
        for cid, kwh in result.energy_kwh.items():
            progress[cid].add("b1", kwh, result.covered_s[cid])
        # Independently: energy of the parts of this interval inside at least one window.
        edges = sorted(
            {prev.ts, cur.ts, *(t for w in spans.values() for t in w if prev.ts < t < cur.ts)}
        )
        for a, b in itertools.pairwise(edges):
            if any(ws <= a and b <= we for ws, we in spans.values()):
                in_any_window += trapezoid_kwh(prev, cur, a, b)
    attributed = sum(p.delivered_kwh for p in progress.values())
    assert abs(attributed - in_any_window) < 1e-9
    for cid, (ws, we) in spans.items():
        assert progress[cid].covered_s_by_asset.get("b1", 0.0) <= (we - ws) + 1e-6


def test_report_status_and_settlement() -> None:
    c = commitment(kwh=0.02)
    assert delivery_status(0.02, 0.0197, 0.02) == "delivered"
    assert delivery_status(0.02, 0.015, 0.02) == "partial"
    assert delivery_status(0.02, 0.001, 0.02) == "failed"
    assert delivery_status(-0.02, -0.0199, 0.02) == "delivered"
    progress = Progress()
    progress.add("b1", 0.01, 15.0)
    report = build_report(c, progress, {"b1": 0.0}, 0.02)
    assert report.status == "partial"
    assert report.coverage == 0.5
    assert report.assets[0].delivered_kwh == 0.01


def test_per_slot_splits_an_interval_at_the_slot_boundary() -> None:
    # 3.6 kW constant from 8 s before a boundary to 2 s after it.
    boundary = T0 + 60
    split = per_slot(Sample(boundary - 8, 3.6), Sample(boundary + 2, 3.6), 60, max_gap_s=15)
    assert split[T0] == pytest.approx((0.008, 8.0))
    assert split[boundary] == pytest.approx((0.002, 2.0))
    assert per_slot(Sample(T0, 1), Sample(T0 + 20, 1), 60, max_gap_s=15) == {}


@given(
    powers=st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=30),
    steps=st.lists(st.floats(0.05, 3.0), min_size=30, max_size=30),
    slot=st.sampled_from([1.0, 5.0, 30.0]),
)
def test_slot_energies_add_up_to_the_whole(
    powers: list[float], steps: list[float], slot: float
) -> None:
    times = [T0 + 0.3]
    for step in steps[: len(powers) - 1]:
        times.append(times[-1] + step)
    samples = [Sample(t, p) for t, p in zip(times, powers, strict=True)]
    total = sum(trapezoid_kwh(a, b, a.ts, b.ts) for a, b in itertools.pairwise(samples))
    split = [per_slot(a, b, slot, max_gap_s=5) for a, b in itertools.pairwise(samples)]
    assert abs(sum(kwh for part in split for kwh, _ in part.values()) - total) < 1e-9
