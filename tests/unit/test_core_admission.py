"""Admission on plain data: what becomes a commitment, what is clipped, what is rejected."""

from __future__ import annotations

from typing import Any

import pytest

from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.control_admission import ControlRequest, StandingOrder, admit_control
from flexedge.controller.core.model import AckStatus, Admission, Offer
from flexedge.controller.core.offers import OfferRules, battery_offers
from flexedge.controller.core.trade_admission import TradeRequest, admit_trade
from tests.support.core_fixtures import T0, battery, commitment

SLOT = 60.0
OFFER_UP = Offer("o-up", "b1", T0, T0 + SLOT, 0.05, 35.0)
OFFER_DOWN = Offer("o-down", "b1", T0, T0 + SLOT, -0.05, 33.0)


def battery_state(soc: float = 0.5) -> AssetState:
    limits = battery()
    return AssetState("battery", Headroom.of_battery(limits, soc), limits, soc)


ASSETS = {"b1": battery_state()}
UNAVAILABLE = AssetState("battery", None)
EMPTY = Ledger([], {})


def trade(**changes: object) -> TradeRequest:
    values: dict[str, object] = dict(
        id="t1", offer_id="o-up", asset="b1", slot_start=T0, energy_kwh=0.03, price_ct=35.0 * 0.03
    )
    values.update(changes)
    return TradeRequest(**values)  # type: ignore[arg-type]


def admit(request: TradeRequest, now: float = T0 + 2, **overrides: object) -> Admission:
    kwargs: dict[str, object] = dict(
        market_enabled=True,
        registry={"b1": (33, 35)},
        offers={"o-up": OFFER_UP, "o-down": OFFER_DOWN},
        traded_kwh={},
        assets=ASSETS,
        ledger=EMPTY,
        slot_seconds=SLOT,
        now=now,
    )
    kwargs.update(overrides)
    return admit_trade(request, **kwargs)  # type: ignore[arg-type]


def test_trade_within_the_offer_is_accepted_over_the_rest_of_the_slot() -> None:
    result = admit(trade())
    assert result.status is AckStatus.ACCEPTED
    c = result.commitment
    assert c is not None
    assert (c.window_start, c.window_end, c.accepted_kwh) == (T0 + 2, T0 + SLOT, 0.03)
    assert c.shares == (("b1", 1.0),)
    assert abs(c.settlement - 1.05) < 1e-9


@pytest.mark.parametrize(
    ("request_", "overrides", "needle"),
    [
        (trade(), {"market_enabled": False}, "balancing market is disabled"),
        (trade(asset="x"), {}, "'x' is not in the asset registry"),
        (trade(offer_id="nope"), {}, "unknown offer 'nope'"),
        (trade(energy_kwh=-0.03, price_ct=1.05), {}, "must have the sign of offer"),
        (trade(energy_kwh=0.06, price_ct=2.1), {}, "exceeds what is left of offer"),
        (trade(), {"traded_kwh": {"o-up": 0.04}}, "exceeds what is left of offer"),
        (trade(price_ct=5.0), {}, "is not the offer rate"),
        (trade(), {"now": T0 + SLOT}, "already over"),
        (trade(), {"assets": {"b1": UNAVAILABLE}}, "unavailable"),
        (trade(slot_start=T0 + 60), {}, "slot_start does not match"),
    ],
)
def test_bad_trades_are_rejected_with_a_reason(
    request_: TradeRequest,
    overrides: dict[str, Any],
    needle: str,
) -> None:
    result = admit(request_, **overrides)
    assert result.status is AckStatus.REJECTED
    assert needle in result.reason
    assert result.commitment is None


def test_trade_beyond_the_power_left_in_the_slot_is_clipped() -> None:
    # 50 s left at 5 kW is 0.0694 kWh; the offer allows 0.05 -> fits. With 10 s left: 0.0139.
    result = admit(trade(energy_kwh=0.05, price_ct=1.75), now=T0 + 50)
    assert result.status is AckStatus.CLIPPED
    assert result.commitment is not None
    assert abs(result.commitment.accepted_kwh - 5.0 * 10 / 3600) < 1e-6
    assert "beyond" in result.reason


ORDER_UP = StandingOrder("t1", ("b1",), 1.5, 0.12)
ORDER_DOWN = StandingOrder("t2", ("b1",), -0.5, -0.05)


def control(**changes: object) -> ControlRequest:
    values: dict[str, object] = dict(
        id="e1", tariff_id="t1", timeslot_start=T0, kwh=0.02, payment=0.5
    )
    values.update(changes)
    return ControlRequest(**values)  # type: ignore[arg-type]


def admit_c(request: ControlRequest, now: float = T0 + 6, ledger: Ledger = EMPTY) -> Admission:
    return admit_control(
        request,
        orders={"t1": {"up": ORDER_UP}, "t2": {"down": ORDER_DOWN}},
        assets=ASSETS,
        ledger=ledger,
        slot_seconds=SLOT,
        now=now,
    )


def test_control_within_the_order_bound_is_accepted() -> None:
    # Bound: (1.5 - 1) x 5 kW x 54 s = 0.0375 kWh.
    result = admit_c(control(kwh=0.02))
    assert result.status is AckStatus.ACCEPTED
    assert result.commitment is not None
    assert result.commitment.window_start == T0 + 6


def test_control_beyond_the_order_bound_is_clipped_and_says_by_how_much() -> None:
    result = admit_c(control(kwh=0.05))
    assert result.status is AckStatus.CLIPPED
    assert result.commitment is not None
    assert abs(result.commitment.accepted_kwh - 0.0375) < 1e-6
    assert "0.0125 kWh is beyond" in result.reason
    assert "exercise_ratio 1.5" in result.reason


def test_control_bound_counts_what_other_commitments_already_use() -> None:
    busy = Ledger([commitment("c0", kwh=0.02, start=T0, end=T0 + SLOT)], {})
    # c0 still needs 0.02 kWh in 54 s = 1.333 kW; 3.667 kW left, half of it is on offer.
    result = admit_c(control(kwh=0.05), ledger=busy)
    expected = 0.5 * (5.0 - 0.02 / (54 / 3600)) * 54 / 3600
    assert result.commitment is not None
    assert abs(result.commitment.accepted_kwh - expected) < 1e-6


@pytest.mark.parametrize(
    ("request_", "now", "needle"),
    [
        (control(tariff_id="nope"), T0 + 6, "unknown tariff 'nope'"),
        (control(kwh=0.0), T0 + 6, "kwh must not be 0"),
        (control(), T0 + 61, "already over"),
        (control(kwh=-0.02), T0 + 6, "tariff 't1' has no down order in force"),
        (control(tariff_id="t2"), T0 + 6, "tariff 't2' has no up order in force"),
    ],
)
def test_bad_control_events_are_rejected(request_: ControlRequest, now: float, needle: str) -> None:
    result = admit_c(request_, now=now)
    assert result.status is AckStatus.REJECTED
    assert needle in result.reason


def test_control_with_every_asset_unavailable_says_so() -> None:
    result = admit_control(
        control(),
        orders={"t1": {"up": ORDER_UP}},
        assets={"b1": UNAVAILABLE},
        ledger=EMPTY,
        slot_seconds=SLOT,
        now=T0 + 6,
    )
    assert result.status is AckStatus.REJECTED
    assert result.reason == ("no asset of tariff 't1' is available (no fresh telemetry): b1")


def test_down_order_takes_charge_capability() -> None:
    result = admit_c(control(tariff_id="t2", kwh=-0.01))
    assert result.status is AckStatus.ACCEPTED
    assert result.commitment is not None
    assert result.commitment.accepted_kwh == -0.01


def test_battery_offers_follow_gsy_rules_then_physics() -> None:
    rules = OfferRules(0.1, 0.1, 33.0, 35.0)
    limits = battery(capacity_kwh=100.0, max_charge_kw=500.0, max_discharge_kw=500.0)
    offers = {
        o.id.rsplit(".", 1)[1]: o
        for o in battery_offers(
            site="s", limits=limits, soc=0.5, rules=rules, slot_start=T0, slot_end=T0 + 900, now=T0
        )
    }
    # Energy-bound: 10 % of stored (0.35 x 100 x 0.95) and of free (0.45 x 100 / 0.95).
    assert abs(offers["supply"].energy_kwh - 3.325) < 1e-4
    assert abs(offers["demand"].energy_kwh + 4.7368) < 1e-4
    assert offers["supply"].rate_ct_per_kwh == 35.0 and offers["demand"].rate_ct_per_kwh == 33.0
    # Power-bound: a 5 kW battery in the last 30 s of a slot offers at most 5 x 30/3600 kWh.
    short = battery_offers(
        site="s",
        limits=battery(),
        soc=0.5,
        rules=rules,
        slot_start=T0,
        slot_end=T0 + 900,
        now=T0 + 870,
    )
    assert all(abs(o.energy_kwh) <= 5.0 * 30 / 3600 for o in short)
    full = battery_offers(
        site="s", limits=battery(), soc=0.95, rules=rules, slot_start=T0, slot_end=T0 + 900, now=T0
    )
    assert [o.energy_kwh > 0 for o in full] == [True]  # a full battery offers no charge
