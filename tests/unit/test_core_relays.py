"""Relay rules in the core: whatever the plan would like (here: an adversary choosing any step
it is offered, tick after tick), a relay never switches before its minimum on or off time and
never more often than its hourly budget."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.kinds import LoadLimits, load_feasible
from flexedge.controller.core.relays import (
    HOUR_S,
    RelayHistory,
    RelayRules,
    is_shed,
    may_switch,
    relay_feasible,
)
from tests.support.properties import examples

LIMITS = LoadLimits("heater", curtailable_share=1.0, relay=True)


@settings(max_examples=examples(300), deadline=None)
@given(
    min_on=st.integers(0, 120),
    min_off=st.integers(0, 120),
    budget=st.integers(1, 40),
    period=st.sampled_from([0.5, 1.0, 2.0]),
    wishes=st.lists(st.booleans(), min_size=50, max_size=600),
    demand=st.floats(0.5, 10.0),
)
def test_no_relay_switches_early_or_beyond_its_hourly_budget(
    min_on: int,
    min_off: int,
    budget: int,
    period: float,
    wishes: list[bool],
    demand: float,
) -> None:
    rules = RelayRules(min_on, min_off, budget)
    history = RelayHistory()
    states: list[tuple[float, bool]] = []
    for tick, wish_shed in enumerate(wishes):
        now = tick * period
        feasible = relay_feasible(load_feasible(LIMITS, demand), history, rules, now)
        # The adversary takes the step it wishes for when it is offered, else what is left.
        wanted = max(feasible.steps) if wish_shed else min(feasible.steps)
        setpoint = wanted if wanted in feasible.steps else feasible.steps[0]
        shed = is_shed(None if setpoint == -demand else setpoint)
        history.record(shed, now)
        states.append((now, shed))
    switches = [
        (t, s) for (t, s), (_, before) in zip(states[1:], states, strict=False) if s != before
    ]
    last_change = states[0][0]
    state = states[0][1]
    for t, shed in switches:
        held_for = t - last_change
        assert held_for >= (min_off if state else min_on) - 1e-9, (t, held_for)
        last_change, state = t, shed
    for t, _ in switches:
        assert sum(1 for u, _ in switches if t - HOUR_S < u <= t) <= budget


def test_a_relay_may_switch_once_its_minimum_time_is_over() -> None:
    rules = RelayRules(min_on_s=30, min_off_s=60, max_switches_per_hour=20)
    history = RelayHistory()
    history.record(False, 0.0)  # on at 0: the first command is no switch
    assert not may_switch(history, rules, 29.9) and may_switch(history, rules, 30.0)
    assert history.record(True, 30.0)  # shed
    held = relay_feasible(load_feasible(LIMITS, 2.0), history, rules, 89.0)
    assert held.steps == (0.0,) and held.p_min == held.p_max == 0.0  # stays shed
    free = relay_feasible(load_feasible(LIMITS, 2.0), history, rules, 90.0)
    assert free.steps == (-2.0, -0.0)
