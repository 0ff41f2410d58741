"""Feasible setpoints per device kind: the dispatcher's clip never leaves them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.core.kinds import (
    GeneratorLimits,
    LoadLimits,
    generator_feasible,
    load_feasible,
)

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
def test_clipped_generator_setpoint_is_allowed(p_now: float, horizon: float,
                                               wanted: float) -> None:
    f = generator_feasible(GEN, p_now, horizon)
    p = f.clip(wanted)
    assert f.allows(p)
    assert p == 0.0 or GEN.min_kw <= p <= GEN.max_kw
    if GEN.min_kw <= p_now <= GEN.max_kw and p != 0.0:
        assert abs(p - p_now) <= GEN.ramp_kw_per_s * horizon + 1e-9


@given(share=st.floats(0, 1), demand=st.floats(0, 50), relay=st.booleans(),
       wanted=st.floats(-100, 100))
def test_clipped_load_setpoint_is_allowed(share: float, demand: float, relay: bool,
                                          wanted: float) -> None:
    f = load_feasible(LoadLimits("l1", share, relay), demand)
    p = f.clip(wanted)
    assert f.allows(p)
    assert -demand - 1e-9 <= p <= -demand * (1 - share) + 1e-9
