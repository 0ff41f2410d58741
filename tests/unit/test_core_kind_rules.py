"""Per-kind rules on plain values: release band, headroom and offer sizing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.kinds import (
    RELEASE_BAND_KW,
    GeneratorLimits,
    LoadLimits,
    generator_headroom,
    load_command,
    load_feasible,
    load_headroom,
)
from flexedge.controller.core.model import Offer
from flexedge.controller.core.offers import OfferRules, generator_offers, load_offers
from tests.support.core_fixtures import T0

RULES = OfferRules(
    demand_ratio=0.5, supply_ratio=0.5, demand_rate_ct_per_kwh=30.0, supply_rate_ct_per_kwh=40.0
)
SLOT = 900.0


def test_load_at_its_baseline_is_released_and_below_it_is_capped() -> None:
    assert load_command(-4.0, -4.0) is None
    assert load_command(-4.0 + RELEASE_BAND_KW, -4.0) is None
    assert load_command(-3.0, -4.0) == -3.0


def test_a_load_told_to_draw_more_than_its_baseline_is_commanded_not_released() -> None:
    assert load_command(-5.0, -4.0) == -5.0
    assert load_command(-4.0 - RELEASE_BAND_KW / 2, -4.0) is None


@given(setpoint=st.floats(-50, 0), baseline=st.floats(-50, 0))
def test_a_load_command_is_a_release_or_the_planned_power(setpoint: float, baseline: float) -> None:
    command = load_command(setpoint, baseline)
    if command is None:
        assert abs(setpoint - baseline) <= RELEASE_BAND_KW
    else:
        assert command == setpoint and abs(command - baseline) > RELEASE_BAND_KW


def test_load_headroom_is_its_curtailable_share_and_nothing_more_to_draw() -> None:
    assert load_headroom(LoadLimits("l1", 0.25, relay=False), 8.0) == Headroom(
        2.0, 0.0, down_kwh=0.0
    )


def test_a_load_that_can_draw_more_has_down_headroom_bounded_by_its_buffer() -> None:
    limits = LoadLimits("l1", 0.25, relay=False, max_extra_kw=3.0, extra_buffer_kwh=0.4)
    assert load_headroom(limits, 8.0) == Headroom(2.0, 3.0, down_kwh=0.4)
    feasible = load_feasible(limits, 8.0)
    assert (feasible.p_min, feasible.p_max, feasible.baseline_kw) == (-11.0, -6.0, -8.0)
    # Offers: half of the 8 kW x 0.25 h it needs is 1 kWh; 3 kW more for 0.25 h would be
    # 0.75 kWh, and its buffer takes 0.4: the demand offer is the buffer.
    offers = offers_of_load(8.0, load_headroom(limits, 8.0))
    assert [(o.energy_kwh, o.rate_ct_per_kwh) for o in offers] == [(-0.4, 30.0)]


def test_a_load_that_cannot_draw_more_keeps_todays_range() -> None:
    feasible = load_feasible(LoadLimits("l1", 0.25, relay=False), 8.0)
    assert (feasible.p_min, feasible.p_max) == (-8.0, -6.0)


def test_generator_headroom_is_up_to_max_and_down_to_a_stop() -> None:
    limits = GeneratorLimits("g1", min_kw=2.0, max_kw=10.0, ramp_kw_per_s=1.0, baseline_kw=4.0)
    assert generator_headroom(limits) == Headroom(6.0, 4.0)


def offers_of_load(demand_kw: float, headroom: Headroom, now: float = T0) -> list[Offer]:
    return load_offers(
        site="s",
        asset="l1",
        demand_kw=demand_kw,
        headroom=headroom,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + SLOT,
        now=now,
    )


def offers_of_generator(headroom: Headroom, now: float = T0) -> list[Offer]:
    return generator_offers(
        site="s",
        asset="g1",
        headroom=headroom,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + SLOT,
        now=now,
    )


def test_load_offers_a_share_of_the_energy_it_needs_clipped_to_drawing_more() -> None:
    # Half of the 4 kW x 0.25 h it needs is 0.5 kWh; drawing 2 kW more, it can take that.
    offers = offers_of_load(4.0, Headroom(1.0, 2.0))
    assert [(o.energy_kwh, o.rate_ct_per_kwh) for o in offers] == [(-0.5, 30.0)]
    # Able to draw only 1 kW more, 0.25 kWh; unable to draw more, nothing.
    assert [o.energy_kwh for o in offers_of_load(4.0, Headroom(1.0, 1.0))] == [-0.25]
    assert offers_of_load(4.0, Headroom(1.0, 0.0)) == []


def test_generator_offers_its_energy_per_slot_at_the_supply_rate() -> None:
    offers = offers_of_generator(Headroom(6.0, 4.0))
    assert [o.rate_ct_per_kwh for o in offers] == [40.0]
    assert offers[0].energy_kwh == pytest.approx(1.5)  # 6 kW x 0.25 h


@given(
    demand=st.floats(0, 50),
    up=st.floats(0, 50),
    down=st.floats(0, 50),
    elapsed=st.floats(0, SLOT),
)
def test_load_and_generator_offers_never_exceed_the_rest_of_the_slot(
    demand: float, up: float, down: float, elapsed: float
) -> None:
    headroom = Headroom(up, down)
    now = T0 + elapsed
    left_h = (SLOT - elapsed) / 3600.0
    for offer in offers_of_load(demand, headroom, now):
        assert offer.energy_kwh < 0
        assert -offer.energy_kwh <= down * left_h + 1e-9
        assert -offer.energy_kwh <= RULES.demand_ratio * demand * SLOT / 3600 + 1e-9
    for offer in offers_of_generator(headroom, now):
        assert 0 < offer.energy_kwh <= up * left_h + 1e-9
