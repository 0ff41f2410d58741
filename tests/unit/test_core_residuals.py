"""Residual offer ids (gsy-e): a trade on the rest of a partly taken offer, on plain data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.admission import EPS_KWH, AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.model import AckStatus, Admission, Offer
from flexedge.controller.core.residuals import (
    energy_left,
    live_residuals,
    record_trade,
    residual_problem,
    root_offer,
)
from flexedge.controller.core.trade_admission import TradeRequest, admit_trade
from tests.support.core_fixtures import T0, battery
from tests.support.properties import examples

SLOT = 60.0
RATE = 35.0
OFFER = Offer("o-up", "b1", T0, T0 + SLOT, 0.05, RATE)
OTHER = Offer("o-g", "g1", T0, T0 + SLOT, 0.04, 40.0)
OFFERS = {OFFER.id: OFFER, OTHER.id: OTHER}


def _assets() -> dict[str, AssetState]:
    limits = battery()
    big = AssetState("battery", Headroom(1000.0, 1000.0), limits, 0.5)
    return {"b1": big, "g1": AssetState("generator", Headroom(10.0, 0.0))}


ASSETS = _assets()


def trade(
    offer_id: str = "o-up",
    kwh: float = 0.02,
    residual: str | None = None,
    asset: str = "b1",
    msg_id: str = "t1",
) -> TradeRequest:
    return TradeRequest(msg_id, offer_id, asset, T0, kwh, RATE * abs(kwh), residual)


def admit(
    request: TradeRequest,
    traded: dict[str, float] | None = None,
    residuals: dict[str, str] | None = None,
) -> Admission:
    return admit_trade(
        request,
        market_enabled=True,
        registry={"b1": (33, 35), "g1": (20, 40)},
        offers=OFFERS,
        traded_kwh=traded or {},
        assets=ASSETS,
        ledger=Ledger([], {}),
        slot_seconds=SLOT,
        now=T0 + 1,
        cover_with_other_assets=False,
        residuals=residuals or {},
    )


def test_a_residual_id_names_its_offer_and_a_chain_comes_back_to_the_root() -> None:
    residuals = {"r1": "o-up", "r2": "o-up"}
    assert root_offer("o-up", OFFERS, residuals) is OFFER
    assert root_offer("r2", OFFERS, residuals) is OFFER
    assert root_offer("r3", OFFERS, residuals) is None
    assert root_offer("r1", {}, residuals) is None  # its offer's slot is over


def test_record_trade_counts_on_the_root_and_adds_the_alias() -> None:
    traded, residuals = record_trade("o-up", -0.02, "r1", {"o-up": 0.01}, {})
    assert traded == {"o-up": pytest.approx(0.03)}
    assert residuals == {"r1": "o-up"}
    traded, residuals = record_trade("o-up", 0.01, None, traded, residuals)
    assert traded == {"o-up": pytest.approx(0.04)}
    assert residuals == {"r1": "o-up"}
    assert energy_left(OFFER, traded) == pytest.approx(0.01)
    assert energy_left(OFFER, {"o-up": 0.07}) == 0.0


def test_live_residuals_drop_those_of_forgotten_offers() -> None:
    assert live_residuals({"r1": "o-up", "r9": "gone"}, OFFERS) == {"r1": "o-up"}


def test_a_trade_on_a_residual_id_is_a_trade_on_the_rest_of_the_offer() -> None:
    first = admit(trade(kwh=0.02, residual="r1"))
    assert first.status is AckStatus.ACCEPTED
    assert first.commitment is not None and first.commitment.accepted_kwh == 0.02
    traded, residuals = record_trade("o-up", 0.02, "r1", {}, {})
    second = admit(trade("r1", 0.03, msg_id="t2"), traded, residuals)
    assert second.status is AckStatus.ACCEPTED, second.reason
    assert second.commitment is not None
    assert second.commitment.accepted_kwh == 0.03
    assert second.commitment.settlement == pytest.approx(RATE * 0.03)


@pytest.mark.parametrize(
    ("request_", "traded", "residuals", "reason"),
    [
        (
            trade("r-never"),
            {},
            {},
            "unknown offer 'r-never'",
        ),
        (
            trade("r1", 0.04),
            {"o-up": 0.02},
            {"r1": "o-up"},
            "energy_kwh 0.0400 kWh exceeds what is left of offer 'r1' (the rest of offer "
            "'o-up') (0.0300 kWh of 0.0500 kWh)",
        ),
        (
            trade(residual="o-g"),
            {},
            {},
            "residual_offer_id 'o-g' names another asset's offer ('g1', offer 'o-g')",
        ),
        (
            trade(residual="r-g"),
            {},
            {"r-g": "o-g"},
            "residual_offer_id 'r-g' names another asset's offer ('g1', offer 'o-g')",
        ),
        (
            trade(residual="o-up"),
            {},
            {},
            "residual_offer_id 'o-up' is the id of an existing offer",
        ),
        (
            trade("r1", 0.01, residual="r1"),
            {"o-up": 0.02},
            {"r1": "o-up"},
            "residual_offer_id 'r1' was already announced for offer 'o-up'",
        ),
        (
            trade(residual="r1"),
            {"o-up": 0.02},
            {"r1": "o-up"},
            "residual_offer_id 'r1' was already announced for offer 'o-up'",
        ),
        (
            trade("r1", asset="g1"),
            {},
            {"r1": "o-up"},
            "offer 'r1' (the rest of offer 'o-up') is for asset 'b1', not 'g1'",
        ),
    ],
)
def test_bad_residual_trades_are_rejected_with_a_reason_that_names_the_id(
    request_: TradeRequest, traded: dict[str, float], residuals: dict[str, str], reason: str
) -> None:
    result = admit(request_, traded, residuals)
    assert (result.status, result.reason, result.commitment) == (
        AckStatus.REJECTED,
        reason,
        None,
    )


def test_residual_problem_is_none_for_a_fresh_id() -> None:
    assert residual_problem("r-new", OFFER, OFFERS, {"r1": "o-up"}) is None


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=6),  # which known id the trade names
            st.floats(min_value=0.0001, max_value=0.06),  # kWh asked
            st.booleans(),  # whether it announces a new residual id
        ),
        max_size=12,
    )
)
def test_what_is_left_is_counted_once_along_any_chain_of_residual_ids(
    steps: list[tuple[int, float, bool]],
) -> None:
    """However trades name the offer (its id, any residual id of any generation), the market
    never takes more than the offer (within the tolerance of one trade), and what is left
    never goes below zero."""
    traded: dict[str, float] = {}
    residuals: dict[str, str] = {}
    ids = ["o-up"]
    accepted_kwh = 0.0
    for index, (pick, kwh, announce) in enumerate(steps):
        named = ids[pick % len(ids)]
        new_id = f"r{index}" if announce else None
        result = admit(trade(named, kwh, new_id, msg_id=f"t{index}"), traded, residuals)
        if result.commitment is None:
            # A rejection changes nothing; only the amount left may reject a trade here.
            assert "exceeds what is left" in result.reason
            continue
        traded, residuals = record_trade("o-up", kwh, new_id, traded, residuals)
        accepted_kwh += kwh
        if new_id is not None:
            ids.append(new_id)
        assert energy_left(OFFER, traded) >= 0.0
        assert traded["o-up"] == pytest.approx(accepted_kwh)
        assert accepted_kwh <= OFFER.energy_kwh + EPS_KWH
    assert set(residuals.values()) <= {"o-up"}
    assert set(residuals) == set(ids[1:])
