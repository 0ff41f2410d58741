"""Limits on what a market message may ask: far-future times, absurd prices and payments are
refused by the core before any market rule, and the desk answers them with one rejection and
no commitment; `status` still works afterwards."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.config.limits import LimitSettings
from flexedge.controller.core.control_admission import ControlRequest, EconomicControl
from flexedge.controller.core.plausibility import (
    Plausibility,
    order_price_problem,
    request_problem,
)
from flexedge.controller.core.trade_admission import SpotTrade, TradeRequest
from flexedge.controller.daemon.market_desk import MarketDesk
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.support.properties import examples
from tests.unit.test_shell_in_process import Clock, balancing_control, queued, shell

LIMITS = Plausibility()
YEAR_9999 = datetime(9999, 12, 31, 23, 0, tzinfo=UTC).timestamp()
YEAR_3000 = datetime(3000, 1, 1, tzinfo=UTC).timestamp()


def control(start: float, payment: float = 0.1) -> ControlRequest:
    return ControlRequest("c", "t1", start, 0.01, payment)


def test_a_time_beyond_the_horizon_is_refused_naming_the_field() -> None:
    assert request_problem(control(T0 + 86400), LIMITS, T0) is None
    problem = request_problem(control(T0 + 86401), LIMITS, T0)
    assert problem is not None and problem.startswith("timeslot_start is more than 86400 s")
    spot = SpotTrade("s", "b1", YEAR_9999, 1.0, "buy", 25.0)
    assert (request_problem(spot, LIMITS, T0) or "").startswith("slot_start is more")
    economic = EconomicControl("e", "t1", math.inf, 0.5)
    assert request_problem(economic, LIMITS, T0) is not None


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (TradeRequest("t", "o", "b1", T0, 1.0, 1e308), "price_ct"),
        (TradeRequest("t", "o", "b1", T0, 1.0, math.nan), "price_ct"),
        (SpotTrade("s", "b1", T0, 1.0, "sell", -5000.0), "rate_ct_per_kwh"),
        (ControlRequest("c", "t1", T0, 0.01, 1e300), "payment"),
    ],
)
def test_absurd_amounts_are_refused_naming_the_field(
    request_: TradeRequest | SpotTrade | ControlRequest, field: str
) -> None:
    problem = request_problem(request_, LIMITS, T0)
    assert problem is not None and problem.startswith(field), problem


def test_an_order_price_beyond_the_limit_is_refused_and_a_down_price_is_not() -> None:
    assert order_price_problem(-0.1, LIMITS) is None
    assert order_price_problem(1e308, LIMITS) == (
        "price_per_kwh 1e+308 is beyond the site's limit of ±10 (limits in the site file)"
    )
    assert order_price_problem(math.inf, LIMITS) == "price_per_kwh must be a finite number"


def test_the_site_file_section_sets_the_limits() -> None:
    limits = LimitSettings(horizon_s=3600, max_payment=5).plausibility()
    assert request_problem(control(T0 + 3601), limits, T0) is not None
    assert request_problem(control(T0, payment=6), limits, T0) is not None
    assert LimitSettings().plausibility() == Plausibility()


@settings(max_examples=examples(300))
@given(
    ahead=st.floats(allow_nan=True, allow_infinity=True),
    payment=st.floats(allow_nan=True, allow_infinity=True),
)
def test_whatever_passes_is_finite_and_within_the_limits(ahead: float, payment: float) -> None:
    start = T0 + ahead
    if request_problem(control(start, payment), LIMITS, T0) is None:
        assert math.isfinite(start) and start <= T0 + LIMITS.horizon_s
        assert math.isfinite(payment) and abs(payment) <= LIMITS.max_payment


def test_the_desk_rejects_far_future_and_absurd_messages_and_status_still_works(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control_loop, store):
        desk = MarketDesk(
            control_loop.site, control_loop, store, control_loop.outbox, clock, lambda _: None
        )

        async def scenario() -> None:
            await control_loop.tick()
            desk.standing.refresh_orders()
            await desk.handle(balancing_control("far", YEAR_9999, 0.01), "market/balancing-control")
            await desk.handle(
                balancing_control("year-3000", YEAR_3000, 0.01),
                "market/balancing-control",
            )
            await desk.handle(
                balancing_control("rich", T0, 0.01, payment=1e300), "market/balancing-control"
            )

        run(scenario())
        acks = queued(store, "market/ack")
        commitments = store.db.execute("SELECT COUNT(*) FROM commitments").fetchone()[0]
        summary = control_loop.summary(clock())
    assert [(a["ref"], a["status"]) for a in acks] == [
        ("far", "rejected"),
        ("year-3000", "rejected"),
        ("rich", "rejected"),
    ]
    assert acks[0]["reason"].startswith("timeslot_start is more than 86400 s ahead")
    assert acks[2]["reason"].startswith("payment 1e+300 is beyond")
    assert commitments == 0
    assert summary["b1"]["available"]
