"""When data is stale, and when a commitment or a metered slot closes, on plain values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flexedge.controller.core.closing import commitment_closes, slot_closes
from flexedge.controller.core.health import STALE_PERIODS, counted_on, stale_after_s
from tests.support.core_fixtures import T0, commitment

PERIOD = 1.0
GRACE = STALE_PERIODS * PERIOD


def test_data_is_stale_after_three_periods() -> None:
    assert STALE_PERIODS == 3
    assert stale_after_s(2.0) == 6.0


def test_a_device_is_counted_on_while_it_answered_recently_and_follows() -> None:
    assert counted_on(True, T0, True, PERIOD, T0 + GRACE)
    assert not counted_on(True, T0, True, PERIOD, T0 + GRACE + 0.01)  # stale
    assert not counted_on(False, T0, True, PERIOD, T0)  # says it is unavailable
    assert not counted_on(True, None, True, PERIOD, T0)  # never answered
    assert not counted_on(True, T0, False, PERIOD, T0)  # ignores its setpoint


def test_commitment_closes_once_every_share_asset_is_metered_past_its_end() -> None:
    c = commitment(start=T0, end=T0 + 30, shares=(("b1", 0.5), ("b2", 0.5)))
    end = T0 + 30
    assert not commitment_closes(c, {"b1": end + 1, "b2": end + 1}, PERIOD, end - 0.1)
    assert commitment_closes(c, {"b1": end, "b2": end}, PERIOD, end)
    # b2 lags: wait for it, but no longer than the stale limit past the end.
    assert not commitment_closes(c, {"b1": end, "b2": end - 1}, PERIOD, end + 1)
    assert not commitment_closes(c, {"b1": end}, PERIOD, end + GRACE - 0.01)
    assert commitment_closes(c, {"b1": end}, PERIOD, end + GRACE)


def test_backups_do_not_hold_up_a_commitment() -> None:
    c = commitment(end=T0 + 30, shares=(("b1", 1.0),), backups=("b2",))
    assert commitment_closes(c, {"b1": T0 + 30}, PERIOD, T0 + 30)


def test_slot_closes_when_metered_past_its_end_or_the_stale_limit_passed() -> None:
    slot, length = T0, 30.0
    assert not slot_closes(slot, length, T0 + 40, PERIOD, T0 + 29)  # not over yet
    assert slot_closes(slot, length, T0 + 30, PERIOD, T0 + 30)
    assert not slot_closes(slot, length, T0 + 29, PERIOD, T0 + 30 + GRACE - 0.01)
    assert slot_closes(slot, length, T0 + 29, PERIOD, T0 + 30 + GRACE)


times = st.floats(-100, 100, allow_nan=False)


@given(
    last_b1=st.one_of(st.none(), times),
    last_b2=st.one_of(st.none(), times),
    now=times,
    later=st.floats(0, 100),
    period=st.floats(0.1, 10),
)
def test_commitment_never_closes_early_and_stays_closed(
    last_b1: float | None, last_b2: float | None, now: float, later: float, period: float
) -> None:
    c = commitment(start=T0 - 30, end=T0, shares=(("b1", 0.5), ("b2", 0.5)))
    metered = {name: T0 + ts for name, ts in (("b1", last_b1), ("b2", last_b2)) if ts is not None}
    at = T0 + now
    closes = commitment_closes(c, metered, period, at)
    if at < c.window_end:
        assert not closes
    if at >= c.window_end + stale_after_s(period):
        assert closes
    if closes:
        assert commitment_closes(c, metered, period, at + later)


@given(last=times, now=times, later=st.floats(0, 100), period=st.floats(0.1, 10))
def test_slot_never_closes_early_and_stays_closed(
    last: float, now: float, later: float, period: float
) -> None:
    at, slot_end = T0 + now, T0 + 30.0
    closes = slot_closes(T0, 30.0, T0 + last, period, at)
    if at < slot_end:
        assert not closes
    if at >= slot_end + stale_after_s(period):
        assert closes
    if closes:
        assert slot_closes(T0, 30.0, T0 + last + later, period, at + later)
