"""Power TAC's order and economic-control rules on plain values (core.orders)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexedge.controller.core.orders import (
    Direction,
    StandingOrder,
    accepted_by_powertac_server,
    balancing_room_kwh,
    direction_of_ratio,
    economic_curtailment_kwh,
    order_for_event,
    ratio_problem,
    replace_order,
    withdraw_order,
)

UP = StandingOrder("t", ("l1",), 0.8, 0.12)
DOWN = StandingOrder("t", ("b1",), -0.5, -0.05)

up_ratios = st.floats(min_value=1e-6, max_value=2.0)
down_ratios = st.floats(min_value=-1.0, max_value=-1e-6)
ratios = st.one_of(up_ratios, down_ratios)


def order_of(ratio: float, price: float = 0.1) -> StandingOrder:
    return StandingOrder("t", ("l1",), ratio, price)


def test_a_down_order_leaves_the_up_order_and_a_second_up_order_replaces_the_first() -> None:
    pair = replace_order(replace_order({}, UP), DOWN)
    assert pair == {"up": UP, "down": DOWN}
    newer = order_of(0.3)
    assert replace_order(pair, newer) == {"up": newer, "down": DOWN}


@given(st.lists(ratios, min_size=1, max_size=12))
def test_each_direction_holds_the_last_order_of_its_own_sign(sequence: list[float]) -> None:
    pair: dict[Direction, StandingOrder] = {}
    for index, ratio in enumerate(sequence):
        pair = replace_order(pair, order_of(ratio, price=index))
    for direction in ("up", "down"):
        own = [r for r in sequence if direction_of_ratio(r) == direction]
        held = pair.get(direction)
        assert (held.exercise_ratio if held else None) == (own[-1] if own else None)


def test_withdraw_clears_one_direction_and_a_missing_order_is_refused() -> None:
    pair: dict[Direction, StandingOrder] = {"up": UP, "down": DOWN}
    without_up, problem = withdraw_order(pair, "t", "up")
    assert (without_up, problem) == ({"down": DOWN}, None)
    unchanged, problem = withdraw_order(without_up, "t", "up")
    assert unchanged == {"down": DOWN}
    assert problem == "tariff 't' has no up order to withdraw"


def test_a_control_event_is_bounded_by_the_order_of_its_sign() -> None:
    pair: dict[Direction, StandingOrder] = {"up": UP, "down": DOWN}
    assert order_for_event(pair, "t", 0.2) == (UP, None)
    assert order_for_event(pair, "t", -0.2) == (DOWN, None)
    order, problem = order_for_event({"up": UP}, "t", -0.2)
    assert order is None
    assert problem == "tariff 't' has no down order in force (kwh -0.2000 asks for down-regulation)"


@pytest.mark.parametrize(
    ("ratio", "direction", "needle"),
    [
        (0.0, None, "exercise_ratio 0 offers nothing"),
        (2.5, None, "exercise_ratio 2.5 is outside the up range (0, 2]"),
        (-1.5, None, "exercise_ratio -1.5 is outside the down range [-1, 0)"),
        (-0.5, "up", "exercise_ratio -0.5 is a down order, not an up order"),
        (0.5, "down", "exercise_ratio 0.5 is an up order, not a down order"),
        (float("nan"), None, "not a number"),
    ],
)
def test_bad_ratios_are_named(ratio: float, direction: str | None, needle: str) -> None:
    problem = ratio_problem(ratio, direction)  # type: ignore[arg-type]
    assert problem is not None and needle in problem


@given(ratios)
def test_every_ratio_in_its_direction_range_is_fine(ratio: float) -> None:
    assert ratio_problem(ratio) is None
    assert ratio_problem(ratio, direction_of_ratio(ratio)) is None


@pytest.mark.parametrize(
    ("ratio", "accepted"), [(0.5, True), (1.0, True), (1.5, False), (-0.5, False), (0.0, False)]
)
def test_powertac_server_takes_only_ratios_in_zero_to_one(ratio: float, accepted: bool) -> None:
    assert accepted_by_powertac_server(ratio) is accepted


def test_economic_curtailment_is_a_share_of_usage_capped_at_max_curtailment() -> None:
    assert economic_curtailment_kwh(0.25, 0.5, 4.0) == pytest.approx(1.0)
    assert economic_curtailment_kwh(0.8, 0.5, 4.0) == pytest.approx(2.0)  # capped
    assert economic_curtailment_kwh(-0.3, 0.5, 4.0) == 0.0  # clamped to [0, 1]
    assert balancing_room_kwh(2.0, 1.0) == pytest.approx(1.0)
    assert balancing_room_kwh(2.0, 2.0) == 0.0


@given(
    st.floats(min_value=-2.0, max_value=3.0),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=1e4),
)
def test_economic_then_balancing_never_exceeds_what_the_loads_may_curtail(
    ratio: float, max_curtailment: float, usage_kwh: float
) -> None:
    curtailable = max_curtailment * usage_kwh
    economic = economic_curtailment_kwh(ratio, max_curtailment, usage_kwh)
    room = balancing_room_kwh(curtailable, economic)
    assert 0.0 <= economic <= curtailable + 1e-9
    assert room >= 0.0
    assert economic + room == pytest.approx(curtailable, abs=1e-9)
