"""Feasible setpoints per device kind: the dispatcher's clip never leaves them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.dispatch import DeviceView, battery_view, plan
from flexedge.controller.core.kinds import (
    GeneratorLimits,
    LoadLimits,
    MeasuredBaseline,
    generator_feasible,
    load_feasible,
)
from flexedge.controller.core.model import BatteryLimits
from tests.support.core_fixtures import T0, commitment
from tests.support.properties import examples

GEN = GeneratorLimits("g1", min_kw=2.0, max_kw=10.0, ramp_kw_per_s=0.5)


def test_continuous_load_is_held_between_firm_part_and_demand() -> None:
    f = load_feasible(LoadLimits("l1", 0.4, relay=False), demand_kw=5.0)
    assert (f.p_min, f.p_max, f.baseline_kw) == (-5.0, -3.0, -5.0)
    assert f.clip(-4.2) == -4.2 and f.clip(0.0) == -3.0


def test_relay_load_is_either_on_or_shed() -> None:
    f = load_feasible(LoadLimits("l1", 1.0, relay=True), demand_kw=3.0)
    assert f.clip(-2.0) == -3.0 and f.clip(-1.0) == 0.0


def test_running_generator_moves_within_ramp_reach() -> None:
    f = generator_feasible(GEN, p_now_kw=6.0, horizon_s=2.0)
    assert (f.p_min, f.p_max) == (5.0, 7.0)
    assert f.clip(10.0) == 7.0 and f.clip(0.0) == 5.0


def test_generator_near_minimum_may_stop_but_not_run_below_it() -> None:
    f = generator_feasible(GEN, p_now_kw=2.5, horizon_s=2.0)
    assert f.clip(0.2) == 0.0
    assert f.clip(1.9) == 2.0
    assert f.clip(3.0) == 3.0


def test_stopped_generator_may_only_start_at_minimum() -> None:
    f = generator_feasible(GEN, p_now_kw=0.0, horizon_s=1.0)
    assert f.clip(8.0) == 2.0 and f.clip(0.5) == 0.0


@given(p_now=st.floats(0, 12), horizon=st.floats(0.1, 10), wanted=st.floats(-20, 20))
def test_clipped_generator_setpoint_is_allowed(p_now: float, horizon: float, wanted: float) -> None:
    f = generator_feasible(GEN, p_now, horizon)
    p = f.clip(wanted)
    assert f.allows(p)
    assert p == 0.0 or GEN.min_kw <= p <= GEN.max_kw
    if GEN.min_kw <= p_now <= GEN.max_kw and p != 0.0:
        assert abs(p - p_now) <= GEN.ramp_kw_per_s * horizon + 1e-9


@given(
    share=st.floats(0, 1), demand=st.floats(0, 50), relay=st.booleans(), wanted=st.floats(-100, 100)
)
def test_clipped_load_setpoint_is_allowed(
    share: float, demand: float, relay: bool, wanted: float
) -> None:
    f = load_feasible(LoadLimits("l1", share, relay), demand)
    p = f.clip(wanted)
    assert f.allows(p)
    assert -demand - 1e-9 <= p <= -demand * (1 - share) + 1e-9


@st.composite
def device_views(draw: st.DrawFn) -> tuple[str, DeviceView]:
    kind = draw(st.sampled_from(["battery", "load", "relay", "generator", "down"]))
    if kind == "battery":
        limits = BatteryLimits(
            "b",
            draw(st.floats(1, 100)),
            0.1,
            0.9,
            draw(st.floats(0.5, 50)),
            draw(st.floats(0.5, 50)),
            0.95,
            0.95,
        )
        return kind, battery_view(limits, draw(st.floats(0, 1)), True, draw(st.floats(0.1, 5)))
    if kind in {"load", "relay"}:
        return kind, DeviceView(
            load_feasible(
                LoadLimits("l", draw(st.floats(0, 1)), kind == "relay"), draw(st.floats(0, 30))
            )
        )
    if kind == "generator":
        low = draw(st.floats(0, 5))
        gen = GeneratorLimits(
            "g", low, low + draw(st.floats(0.5, 20)), draw(st.floats(0.1, 5)), baseline_kw=0.0
        )
        return kind, DeviceView(
            generator_feasible(gen, draw(st.floats(0, 30)), draw(st.floats(0.1, 5)))
        )
    return kind, DeviceView(None)


@settings(max_examples=examples(300))
@given(
    sites=st.lists(device_views(), min_size=1, max_size=6),
    energies=st.lists(st.floats(-1, 1).filter(lambda e: abs(e) > 1e-6), min_size=1, max_size=5),
    share_seed=st.lists(st.floats(0.01, 1), min_size=6, max_size=6),
    offset=st.floats(0, 59),
)
def test_plan_keeps_every_device_of_a_random_site_within_its_limits(
    sites: list[tuple[str, DeviceView]],
    energies: list[float],
    share_seed: list[float],
    offset: float,
) -> None:
    views = {f"d{i}": view for i, (_, view) in enumerate(sites)}
    names = list(views)
    total = sum(share_seed[: len(names)])
    shares = tuple((n, share_seed[i] / total) for i, n in enumerate(names))
    commitments = [
        commitment(f"c{i}", kwh=e, end=T0 + 60, shares=shares) for i, e in enumerate(energies)
    ]
    result = plan(commitments, {}, views, T0 + offset)
    for name, view in views.items():
        if view.feasible is None:
            assert name not in result.setpoints
            continue
        p = result.setpoints[name]
        assert view.feasible.allows(p), (name, p, view.feasible)
        assert abs(sum(result.allocations[name].values()) - (p - view.feasible.baseline_kw)) < 1e-6


def test_measured_baseline_averages_recent_draw_and_freezes_while_dispatched() -> None:
    tracker = MeasuredBaseline(window_s=10)
    assert tracker.value(T0) is None
    for second in range(0, 21):
        tracker.observe(T0 + second, -4.0 if second < 15 else -6.0, dispatched=False)
    # The last 10 s: 4 s at -4 kW, a 1-s ramp, 5 s at -6 kW.
    assert tracker.value(T0 + 20) == pytest.approx((4 * -4 + -5 + 5 * -6) / 10)
    before = tracker.average(T0 + 21)  # what it is frozen at when dispatch starts
    for second in range(21, 30):
        tracker.observe(T0 + second, -2.0, dispatched=True)  # curtailed: not its baseline
    assert tracker.value(T0 + 29) == before
    tracker.observe(T0 + 30, -6.0, dispatched=False)
    assert tracker.value(T0 + 30) != before  # released: it follows the load again
