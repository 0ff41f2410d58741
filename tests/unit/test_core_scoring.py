"""Scoring on plain data: resampling, the split among commitments, and the score's bounds."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flexedge.controller.core.scoring import (
    FLAT_SHARE,
    AssetTrace,
    commitment_series,
    commitment_share,
    linear_at,
    pearson,
    sample_times,
    score,
    score_commitment,
    step_at,
)
from tests.support.core_fixtures import T0
from tests.support.properties import examples

# Magnitudes a real target has: 0, or at least a watt. Subnormal floats only test underflow.
power = st.one_of(st.just(0.0), st.floats(0.001, 10.0), st.floats(-10.0, -0.001))
targets = st.lists(power, min_size=2, max_size=60)


def _spread(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return float((sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5)


def _moves(target: list[float]) -> bool:
    """Not flat in the scoring's sense, so correlation and delay apply."""
    mean_abs = sum(abs(t) for t in target) / len(target)
    return mean_abs > 0 and _spread(target) > FLAT_SHARE * mean_abs


def _noisy(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [2.0 + rng.uniform(-1.5, 1.5) for _ in range(n)]


# -- resampling ---------------------------------------------------------------------------------
def test_samples_sit_in_the_middle_of_each_second() -> None:
    assert sample_times(T0, T0 + 3) == [T0 + 0.5, T0 + 1.5, T0 + 2.5]
    assert sample_times(T0, T0 + 2.5) == [T0 + 0.5, T0 + 1.5, T0 + 2.25]
    assert sample_times(T0, T0) == []


def test_a_step_holds_until_the_next_row_and_is_none_before_the_first() -> None:
    rows = [(10.0, "a"), (12.0, "b")]
    assert step_at(rows, [9.9, 10.0, 11.9, 12.0, 99.0]) == [None, "a", "a", "b", "b"]


def test_measured_power_is_linear_between_samples_and_none_across_a_gap() -> None:
    points = [(0.0, 0.0), (2.0, 4.0), (10.0, 4.0)]
    assert linear_at(points, [-1.0, 0.0, 0.5, 2.0, 6.0, 10.0, 11.0], max_gap_s=3.0) == [
        None,
        0.0,
        1.0,
        4.0,
        None,
        4.0,
        None,
    ]


# -- the split among commitments on one asset --------------------------------------------------
@settings(max_examples=examples(300))
@given(
    allocations=st.dictionaries(st.sampled_from("abcd"), power, min_size=1),
    measured=st.floats(-10, 10),
)
def test_the_commitments_on_an_asset_share_exactly_what_was_measured(
    allocations: dict[str, float],
    measured: float,
) -> None:
    shares = [commitment_share(allocations, cid, measured) for cid in allocations]
    assert sum(shares) == pytest.approx(measured, abs=1e-9)
    assert commitment_share(allocations, "other", measured) == 0.0


def test_an_asset_without_allocations_counts_wholly_against_the_commitment() -> None:
    assert commitment_share({}, "c1", 1.5) == 1.5


def test_series_sum_assets_and_drop_seconds_without_telemetry() -> None:
    # b1 carries c1 alone; b2 shares with c2 by allocation (3:1) and has a gap from T0+4.
    b1 = AssetTrace(
        [(T0 - 1, {}), (T0 + 0.1, {"c1": 2.0})],
        [(T0 - 1, 0.0), (T0 + 1, 2.0), (T0 + 3, 2.0), (T0 + 6, 2.0)],
    )
    b2 = AssetTrace(
        [(T0, {"c1": 3.0, "c2": 1.0})], [(T0, 4.0), (T0 + 2, 4.0), (T0 + 4, 4.0), (T0 + 20, 4.0)]
    )
    times, target, response = commitment_series(
        "c1", (T0, T0 + 6), {"b1": b1, "b2": b2}, max_gap_s=3.0
    )
    assert times[0] == T0 + 0.5
    assert target == [5.0] * 6
    assert response[0] == pytest.approx(1.5 + 3.0)  # b1 on its way up, b2's 3/4 of 4 kW
    assert response[1:4] == [pytest.approx(5.0)] * 3
    assert response[4:] == [None, None]


# -- the score ------------------------------------------------------------------------------------
@settings(max_examples=examples(300))
@given(target=targets)
def test_a_response_identical_to_the_target_scores_one_everywhere(target: list[float]) -> None:
    assume(any(target))
    result = score(target, list(target))
    assert result.tracking == 1.0 and result.precision == 1.0
    assert result.total == pytest.approx(1.0)
    if _moves(target):
        assert result.correlation == pytest.approx(1.0) and result.delay == 1.0
        assert result.delay_s == 0.0


@settings(max_examples=examples(500))
@given(data=st.data(), target=targets, delay_max=st.sampled_from([1.0, 5.0, 10.0]))
def test_every_score_stays_in_zero_one(
    data: st.DataObject, target: list[float], delay_max: float
) -> None:
    response = data.draw(
        st.lists(st.one_of(st.none(), power), min_size=len(target), max_size=len(target))
    )
    result = score(target, response, delay_max_s=delay_max)
    for part in (result.tracking, result.correlation, result.delay, result.precision, result.total):
        assert part is None or 0.0 <= part <= 1.0
    assert result.scored == sum(r is not None for r in response)


@settings(max_examples=examples(300))
@given(target=st.lists(power, min_size=12, max_size=60), lag=st.integers(1, 10))
def test_a_delayed_copy_correlates_fully_and_loses_delay_score(
    target: list[float], lag: int
) -> None:
    delayed = [target[max(0, k - lag)] for k in range(len(target))]
    assume(_moves(target) and len(set(target[: len(target) - lag])) > 1)
    assume(len(target) - lag >= (len(target) + 1) // 2)  # a lag that leaves half the pairs
    result = score(target, delayed)
    assert result.correlation == pytest.approx(1.0)
    # The shortest lag that correlates as well wins: at most `lag` (a ramp fits every lag).
    assert result.delay_s is not None and result.delay_s <= lag
    assert result.delay is not None and result.delay >= (10 - lag) / 10


@pytest.mark.parametrize("lag", range(1, 11))
def test_a_delayed_copy_of_a_noisy_target_is_found_at_its_delay(lag: int) -> None:
    target = _noisy(120)
    result = score(target, [target[max(0, k - lag)] for k in range(120)])
    assert result.delay_s == lag
    assert result.delay == pytest.approx((10 - lag) / 10)
    assert result.correlation == pytest.approx(1.0)
    assert result.precision is not None and result.precision < 1.0


@settings(max_examples=examples(200))
@given(
    target=targets,
    noise=st.lists(st.floats(-1, 1), min_size=60, max_size=60),
    factor=st.floats(0.01, 100),
)
def test_scaling_both_signals_changes_no_score(
    target: list[float], noise: list[float], factor: float
) -> None:
    response = [t + n for t, n in zip(target, noise, strict=False)]
    a = score(target, response)
    b = score([t * factor for t in target], [r * factor for r in response])
    for x, y in ((a.precision, b.precision), (a.correlation, b.correlation), (a.total, b.total)):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            assert x == pytest.approx(y, abs=1e-6)


def test_a_lag_that_leaves_few_pairs_is_not_taken_for_the_delay() -> None:
    # 13 samples with a gap in the response: shifted by 10, three pairs are left, which
    # happen to line up perfectly. The response follows at once; that is its delay.
    target = [5.0, 5.0, 5.2, 5.4, 5.4, 5.4, 5.6, 5.4, 5.4, 5.2, 5.0, 5.2, 5.4]
    response: list[float | None] = [
        5.0,
        5.1,
        5.1,
        None,
        None,
        None,
        None,
        None,
        5.3,
        5.25,
        5.05,
        5.1,
        5.5,
    ]
    result = score(target, response)
    assert result.delay_s is not None and result.delay_s <= 3
    assert result.delay is not None and result.delay >= 0.7


def test_a_flat_target_scores_precision_only() -> None:
    result = score([2.0] * 30, [2.0] * 10 + [1.92] * 10 + [1.8] * 10)
    assert result.correlation is None and result.delay is None
    assert result.precision == pytest.approx(1 - (0.08 + 0.2) / 3 / 2.0)
    assert result.total == result.precision
    assert result.tracking == pytest.approx(2 / 3)  # 0.08 kW is within 5 %, 0.2 kW is not


def test_near_zero_targets_are_judged_against_the_mean_target() -> None:
    # Mean |target| 1.0: the 0-kW seconds allow 0.05 kW, the 2-kW seconds 0.1 kW.
    target = [0.0, 2.0] * 10
    assert score(target, [0.04, 2.09] * 10).tracking == 1.0
    assert score(target, [0.06, 2.0] * 10).tracking == 0.5


def test_a_response_that_never_moves_gets_no_correlation_or_delay_credit() -> None:
    result = score(_noisy(60), [2.0] * 60)
    assert result.correlation == 0.0 and result.delay == 0.0


def test_nothing_requested_or_nothing_measured_scores_nothing() -> None:
    for result in (score([0.0] * 10, [0.3] * 10), score([1.0] * 10, [None] * 10)):
        assert result.total is None and result.tracking is None
    assert score([1.0] * 10, [None] * 10).scored == 0


def test_the_delay_range_must_hold_one_sample() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        score([1.0, 2.0], [1.0, 2.0], dt=1.0, delay_max_s=0.4)


def test_pearson_edge_cases() -> None:
    assert pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert pearson([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)


def test_score_commitment_finds_a_two_second_late_step() -> None:
    # Target 0 for 10 s then 3 kW; telemetry every 0.5 s shows the step two seconds late.
    allocations = [(T0, {"c1": 0.0}), (T0 + 10, {"c1": 3.0})]
    measured = [(T0 + k / 2, 3.0 if k >= 24 else 0.0) for k in range(-2, 64)]
    result = score_commitment(
        "c1", (T0, T0 + 30), {"b1": AssetTrace(allocations, measured)}, max_gap_s=3.0
    )
    assert result.samples == result.scored == 30
    assert result.delay_s == 2.0 and result.delay == pytest.approx(0.8)
    assert result.correlation == pytest.approx(1.0)
    assert result.tracking == pytest.approx(28 / 30)
