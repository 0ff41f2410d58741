"""Offers and admission for loads and generators, on plain data."""

from __future__ import annotations

import pytest

from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.control_admission import (
    ControlRequest,
    EconomicControl,
    StandingOrder,
    admit_control,
    admit_economic_control,
    live_order,
)
from flexedge.controller.core.dispatch import commitment_power
from flexedge.controller.core.model import AckStatus
from flexedge.controller.core.offers import OfferRules, clipped_offers, load_supply_after_spot_trade
from flexedge.controller.core.orders import balancing_room_kwh, economic_curtailment_kwh
from flexedge.controller.core.trade_admission import SPOT_ONLY, SpotTrade, admit_spot_trade
from tests.support.core_fixtures import T0, battery

RULES = OfferRules(
    demand_ratio=0.1, supply_ratio=0.1, demand_rate_ct_per_kwh=30.0, supply_rate_ct_per_kwh=40.0
)
LOAD = Headroom(up_kw=2.0, down_kw=0.0)  # 2 kW curtailable, cannot draw more


def test_load_offers_to_curtail_part_of_what_it_bought() -> None:
    offers = load_supply_after_spot_trade(
        site="s",
        asset="l1",
        trade_id="sp-1",
        bought_kwh=3.0,
        headroom=LOAD,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0 + 60,
    )
    assert [(o.energy_kwh, o.rate_ct_per_kwh) for o in offers] == [(0.3, 40.0)]
    assert offers[0].id.endswith(".supply.after-sp-1")


def test_load_offer_after_spot_trade_is_clipped_to_what_it_can_shed() -> None:
    offers = load_supply_after_spot_trade(
        site="s",
        asset="l1",
        trade_id="sp-2",
        bought_kwh=30.0,
        headroom=LOAD,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0 + 810,
    )  # 90 s left at 2 kW = 0.05 kWh
    assert offers[0].energy_kwh == pytest.approx(0.05, abs=1e-4)


def test_load_that_cannot_draw_more_makes_no_demand_offer() -> None:
    offers = clipped_offers(
        site="s",
        asset="l1",
        headroom=LOAD,
        wanted_demand_kwh=0.4,
        wanted_supply_kwh=0.0,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0,
    )
    assert offers == []


@pytest.mark.parametrize(
    ("demand_rate", "supply_rate", "sides"),
    [(0.0, 40.0, [0.5]), (30.0, 0.0, [-0.5]), (0.0, 0.0, []), (30.0, 40.0, [-0.5, 0.5])],
)
def test_a_side_with_a_balancing_rate_of_0_makes_no_offer(
    demand_rate: float, supply_rate: float, sides: list[float]
) -> None:
    offers = clipped_offers(
        site="s",
        asset="b1",
        headroom=Headroom(8.0, 8.0),
        wanted_demand_kwh=0.5,
        wanted_supply_kwh=0.5,
        rules=OfferRules(0.1, 0.1, demand_rate, supply_rate),
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0,
    )
    assert [o.energy_kwh for o in offers] == sides
    assert all(o.price_ct > 0 for o in offers)


def test_generator_offers_its_energy_per_slot_above_its_schedule() -> None:
    offers = clipped_offers(
        site="s",
        asset="g1",
        headroom=Headroom(8.0, 2.0),
        wanted_demand_kwh=0.0,
        wanted_supply_kwh=8.0 * 0.25,
        rules=RULES,
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0 + 450,
    )
    assert [o.energy_kwh for o in offers] == [pytest.approx(1.0)]  # half the slot is left


def spot(**changes: object) -> SpotTrade:
    values: dict[str, object] = dict(
        id="sp", asset="l1", slot_start=T0, energy_kwh=1.0, side="buy", rate_ct_per_kwh=25.0
    )
    values.update(changes)
    return SpotTrade(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("trade", "enabled", "now", "needle"),
    [
        (spot(asset="ghost"), True, T0, "'ghost' is not in the asset registry"),
        (spot(), True, T0 + 900, "already over"),
    ],
)
def test_bad_spot_trades_are_rejected(
    trade: SpotTrade, enabled: bool, now: float, needle: str
) -> None:
    result = admit_spot_trade(
        trade, market_enabled=enabled, registry={"l1": (0.0, 0.0)}, slot_seconds=900, now=now
    )
    assert result.status is AckStatus.REJECTED and needle in result.reason


def test_with_the_balancing_market_disabled_a_spot_trade_is_still_recorded() -> None:
    recorded = admit_spot_trade(
        spot(), market_enabled=False, registry={}, slot_seconds=900, now=T0, devices={"l1"}
    )
    assert (recorded.status, recorded.reason, recorded.commitment) == (
        AckStatus.ACCEPTED,
        SPOT_ONLY,
        None,
    )
    assert "balancing market is disabled" in SPOT_ONLY
    ghost = admit_spot_trade(
        spot(asset="ghost"), market_enabled=False, registry={}, slot_seconds=900, now=T0
    )
    assert (ghost.status, ghost.reason) == (
        AckStatus.REJECTED,
        "asset 'ghost' is not a device of this site",
    )
    late = admit_spot_trade(
        spot(), market_enabled=False, registry={}, slot_seconds=900, now=T0 + 900, devices={"l1"}
    )
    assert late.status is AckStatus.REJECTED and "already over" in late.reason


def test_spot_trade_is_recorded_not_committed() -> None:
    result = admit_spot_trade(
        spot(), market_enabled=True, registry={"l1": (0.0, 0.0)}, slot_seconds=900, now=T0 + 1
    )
    assert result.status is AckStatus.ACCEPTED and result.commitment is None


def control(kwh: float, tariff: str = "t") -> ControlRequest:
    return ControlRequest(id="e", tariff_id=tariff, timeslot_start=T0, kwh=kwh, payment=1.0)


ASSETS = {
    "l1": AssetState("flexible_load", LOAD, usage_kw=4.0),
    "b1": AssetState("battery", Headroom.of_battery(battery(), 0.5), battery(), 0.5),
    "g1": AssetState("generator", Headroom(8.0, 2.0)),
}


def test_curtailment_order_offers_a_share_of_curtailable_load_only() -> None:
    order = StandingOrder("t", ("l1", "b1", "g1"), 0.5, 0.1)
    # 2 kW curtailable x 0.1 h x 0.5; the battery counts only above 1, the generator never.
    result = admit_control(
        control(1.0),
        orders={"t": {"up": order}},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    )
    assert result.status is AckStatus.CLIPPED
    assert result.commitment is not None
    assert result.commitment.accepted_kwh == pytest.approx(0.1)
    assert result.commitment.shares == (("l1", 1.0),)


def test_order_above_one_adds_storage_discharge_to_all_curtailable_load() -> None:
    order = StandingOrder("t", ("l1", "b1"), 1.5, 0.1)
    result = admit_control(
        control(0.3),
        orders={"t": {"up": order}},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    )
    # Load: all of 2 kW x 0.1 h = 0.2; battery: half of 5 kW x 0.1 h = 0.25.
    assert result.status is AckStatus.ACCEPTED
    assert result.commitment is not None
    shares = dict(result.commitment.shares)
    assert shares["l1"] == pytest.approx(0.2 / 0.45) and shares["b1"] == pytest.approx(0.25 / 0.45)


def economic(ratio: float, tariff: str = "t", start: float = T0) -> EconomicControl:
    return EconomicControl(id="ec", tariff_id=tariff, timeslot_start=start, curtailment_ratio=ratio)


def test_economic_control_curtails_the_tariffs_loads_by_the_ratio_unpaid() -> None:
    result = admit_economic_control(
        economic(0.25),
        tariffs={"t": ("l1", "b1")},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    )
    assert result.status is AckStatus.ACCEPTED and result.commitment is not None
    # Power TAC: min(0.25, maxCurtailment 0.5) of the 4 kW usage for 0.1 h; the battery is
    # not a curtailable load.
    assert result.commitment.accepted_kwh == pytest.approx(0.1)
    assert result.commitment.shares == (("l1", 1.0),)
    assert result.commitment.settlement == 0.0


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (economic(0.5, tariff="nope"), "unknown tariff 'nope'"),
        (economic(0.5, start=T0 - 400), "already over"),
        (economic(0.5, tariff="batteries"), "has no curtailable loads"),
    ],
)
def test_bad_economic_controls_are_rejected(request_: EconomicControl, needle: str) -> None:
    tariffs = {"t": ("l1",), "batteries": ("b1",)}
    result = admit_economic_control(
        request_, tariffs=tariffs, assets=ASSETS, ledger=Ledger([], {}), slot_seconds=360, now=T0
    )
    assert result.status is AckStatus.REJECTED and needle in result.reason


def test_economic_control_of_ratio_zero_changes_nothing() -> None:
    result = admit_economic_control(
        economic(0.0),
        tariffs={"t": ("l1",)},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    )
    assert result.status is AckStatus.ACCEPTED and result.commitment is None


@pytest.mark.parametrize(
    ("ratio", "available", "published"),
    [
        (1.5, {"l1", "b1"}, 1.5),
        (1.5, {"l1"}, 1.0),  # no storage: all curtailable load, nothing beyond
        (1.5, {"b1"}, 1.5),  # storage alone still backs the part above 1
        (0.5, {"b1"}, None),  # curtailment only, and no load: nothing to offer
        (0.5, {"l1"}, 0.5),
        (-0.5, {"l1"}, None),  # down-regulation needs storage
        (-0.5, {"b1"}, -0.5),
    ],
)
def test_live_order_follows_what_the_tariffs_assets_can_do(
    ratio: float,
    available: set[str],
    published: float | None,
) -> None:
    states = {a: s if a in available else AssetState(s.kind, None) for a, s in ASSETS.items()}
    order = live_order(StandingOrder("t", ("l1", "b1"), ratio, 0.1), states)
    assert (order.exercise_ratio if order else None) == published


def test_economic_control_for_a_later_timeslot_is_held_until_that_timeslot() -> None:
    later = T0 + 360
    result = admit_economic_control(
        economic(0.25, start=later),
        tariffs={"t": ("l1",)},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0 + 10,
    )
    held = result.commitment
    assert result.status is AckStatus.ACCEPTED and held is not None
    assert (held.window_start, held.window_end) == (later, later + 360)
    # Nothing is curtailed before the timeslot; from its start the whole of it is.
    assert commitment_power(held, None, T0 + 10) == 0.0
    assert commitment_power(held, None, later) == pytest.approx(0.25 * 4.0)


def test_balancing_gets_what_the_economic_control_leaves_whichever_arrives_first() -> None:
    order = StandingOrder("t", ("l1",), 1.0, 0.1)

    def balancing(ledger: Ledger) -> float:
        result = admit_control(
            control(1.0),
            orders={"t": {"up": order}},
            assets=ASSETS,
            ledger=ledger,
            slot_seconds=360,
            now=T0,
        )
        assert result.commitment is not None
        return result.commitment.accepted_kwh

    def economic_after(ledger: Ledger) -> float:
        result = admit_economic_control(
            economic(0.25),
            tariffs={"t": ("l1",)},
            assets=ASSETS,
            ledger=ledger,
            slot_seconds=360,
            now=T0,
        )
        assert result.commitment is not None
        return result.commitment.accepted_kwh

    curtailable = 2.0 * 0.1  # 2 kW for 0.1 h
    economic_kwh = economic_curtailment_kwh(0.25, 0.5, 4.0 * 0.1)
    first = admit_economic_control(
        economic(0.25),
        tariffs={"t": ("l1",)},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    ).commitment
    assert first is not None and first.accepted_kwh == pytest.approx(economic_kwh)
    room = balancing(Ledger([first], {}))
    assert room == pytest.approx(balancing_room_kwh(curtailable, economic_kwh))
    # Balancing first: the economic control still takes its whole share of usage (dispatch
    # serves it first; test_core_economic_first covers what the balancing event then gets).
    taken = admit_control(
        control(1.0),
        orders={"t": {"up": order}},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=360,
        now=T0,
    ).commitment
    assert taken is not None
    assert economic_after(Ledger([taken], {})) == pytest.approx(economic_kwh)
