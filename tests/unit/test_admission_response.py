"""Admission counts a device's response (its site file's `response` line): a window that
starts as the request arrives gets the device's full power only after its delay and half its
ramp, so it is sized on what is left; a window far enough ahead loses nothing, since dispatch
starts the device ahead of it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.control_admission import EconomicControl, admit_economic_control
from flexedge.controller.core.dispatch import AT_ONCE, ResponseFigures
from flexedge.controller.core.model import AckStatus, Admission, Offer
from flexedge.controller.core.trade_admission import TradeRequest, admit_trade
from tests.support.core_fixtures import T0, battery
from tests.support.properties import examples

SLOT = 30.0
# Energies are acknowledged to the microkilowatt-hour (6 decimals).
KWH_ABS = 1e-6
SLOW = ResponseFigures(delay_s=4.0, ramp_kw_per_s=2.5)  # 4 s, then 2 s to 5 kW: 5 s lead


def battery_state(response: ResponseFigures) -> AssetState:
    limits = battery()
    headroom = Headroom.of_battery(limits, 0.5)
    return AssetState("battery", headroom, limits, 0.5, response=response)


def trade(kwh: float, response: ResponseFigures, slot_start: float, now: float) -> Admission:
    offer = Offer("o-up", "b1", slot_start, slot_start + SLOT, 0.05, 35.0)
    request = TradeRequest(
        id="t1",
        offer_id="o-up",
        asset="b1",
        slot_start=slot_start,
        energy_kwh=kwh,
        price_ct=35.0 * kwh,
    )
    return admit_trade(
        request,
        market_enabled=True,
        registry={"b1": (33, 35)},
        offers={"o-up": offer},
        traded_kwh={},
        assets={"b1": battery_state(response)},
        ledger=Ledger([], {}),
        slot_seconds=SLOT,
        now=now,
    )


def test_a_window_that_starts_now_is_sized_after_the_devices_lead() -> None:
    kwh = 5.0 * 28 / 3600  # 5 kW for the 28 s left of the slot
    at_once = trade(kwh, AT_ONCE, T0, now=T0 + 2)
    assert at_once.status is AckStatus.ACCEPTED
    slow = trade(kwh, SLOW, T0, now=T0 + 2)
    assert slow.status is AckStatus.CLIPPED and slow.commitment is not None
    assert slow.commitment.accepted_kwh == pytest.approx(5.0 * 23 / 3600, abs=KWH_ABS)  # 28 s - 5 s
    assert slow.commitment.window_start == T0 + 2  # the window is the slot's, as traded


def test_a_window_ahead_of_the_lead_loses_nothing() -> None:
    kwh = 5.0 * SLOT / 3600
    result = trade(kwh, SLOW, T0 + 10, now=T0)
    assert result.status is AckStatus.ACCEPTED
    assert result.commitment is not None and result.commitment.accepted_kwh == pytest.approx(
        kwh, abs=KWH_ABS
    )


def test_an_economic_control_on_a_slow_load_is_sized_on_what_it_can_shed_in_time() -> None:
    def admit(response: ResponseFigures) -> float:
        load = AssetState("flexible_load", Headroom(2.0, 0.0), usage_kw=4.0, response=response)
        result = admit_economic_control(
            EconomicControl(id="ec", tariff_id="t", timeslot_start=T0, curtailment_ratio=0.5),
            tariffs={"t": ("l1",)},
            assets={"l1": load},
            ledger=Ledger([], {}),
            slot_seconds=SLOT,
            now=T0,
        )
        assert result.commitment is not None
        return result.commitment.accepted_kwh

    assert admit(AT_ONCE) == pytest.approx(2.0 * SLOT / 3600, abs=KWH_ABS)  # half of its 4 kW usage
    lagging = ResponseFigures(delay_s=1.0, ramp_kw_per_s=1.0)  # 1 s, then 2 s to 2 kW
    assert admit(lagging) == pytest.approx(2.0 * (SLOT - 2.0) / 3600, abs=KWH_ABS)


@settings(max_examples=examples(200), deadline=None)
@given(
    delay=st.floats(0, 20),
    ramp=st.none() | st.floats(0.5, 50),
    ahead=st.floats(-SLOT + 1, 20),
    kwh=st.floats(0.001, 0.05),
)
def test_never_more_than_the_device_can_give_after_its_lead(
    delay: float, ramp: float | None, ahead: float, kwh: float
) -> None:
    """Accepted at most full power from the later of the window's start and now + lead to
    the window's end, and never more than what the device answering at once would get."""
    response = ResponseFigures(delay, ramp)
    slot_start = T0 + max(ahead, 0.0)
    now = T0 + max(-ahead, 0.0)
    result = trade(kwh, response, slot_start, now)
    accepted = result.commitment.accepted_kwh if result.commitment else 0.0
    ready = max(slot_start, now + response.lead_s(5.0))
    assert accepted <= 5.0 * max(0.0, slot_start + SLOT - ready) / 3600 + KWH_ABS
    at_once = trade(kwh, AT_ONCE, slot_start, now)
    assert accepted <= (at_once.commitment.accepted_kwh if at_once.commitment else 0.0) + KWH_ABS
