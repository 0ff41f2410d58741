"""What a prequalification run's samples say, on samples of a known response: a device that
waits 0.5 s and then ramps at 5 kW/s, against a step profile and a double step."""

from __future__ import annotations

import pytest

from flexedge.tools.prequalify.analysis import Sample, analyse, build_profile, target_at


def ramping(
    profile: list[tuple[float, float]], delay: float, ramp: float
) -> list[tuple[float, float]]:
    """10-Hz samples of a device that follows `profile` after `delay`, at `ramp` kW/s."""
    samples: list[Sample] = []
    p, t = 0.0, 0.0
    while t <= profile[-1][0]:
        target = target_at(profile, max(0.0, t - delay))
        p += max(-ramp * 0.1, min(ramp * 0.1, target - p))
        samples.append((t, p))
        t = round(t + 0.1, 10)
    return samples


def test_a_delayed_ramping_device_shows_its_delay_its_ramp_and_no_overshoot() -> None:
    profile = build_profile("step", 5.0, -5.0, hold_s=5.0)
    result = analyse(profile, ramping(profile, delay=0.5, ramp=5.0))
    up, back = result.steps
    assert (up.at_s, up.from_kw, up.to_kw) == (5.0, 0.0, 5.0)
    assert up.delay_s == pytest.approx(0.6, abs=0.11)  # 0.5 s, then the first 0.25 kW
    assert up.to_90_s == pytest.approx(0.5 + 0.9, abs=0.11)
    assert up.to_100_s == pytest.approx(1.5, abs=0.11)
    assert up.overshoot_share == 0.0
    assert back.to_kw == 0.0 and back.to_90_s == pytest.approx(1.4, abs=0.11)
    # It lags by its delay and half its ramp on both edges: the same energy, a second later.
    target, measured = result.up_kwh
    assert target == pytest.approx(5.0 * 5 / 3600, rel=0.01)
    assert measured == pytest.approx(target, rel=0.03) and result.down_kwh == (0.0, 0.0)
    assert max(result.tracking_error_kw) > 2.0 and min(result.tracking_error_kw) == 0.0


def test_a_double_step_measures_both_directions_and_a_ramp_profile_no_stairs() -> None:
    double = build_profile("double-step", 4.0, -4.0, hold_s=4.0)
    steps = analyse(double, ramping(double, delay=0.0, ramp=100.0)).steps
    assert [(s.from_kw, s.to_kw) for s in steps] == [(0.0, 4.0), (4.0, -4.0), (-4.0, 0.0)]
    assert all(s.to_100_s is not None and s.to_100_s <= 0.11 for s in steps)
    ramp = build_profile("ramp", 4.0, -4.0, hold_s=4.0)
    assert analyse(ramp, ramping(ramp, delay=0.0, ramp=100.0)).steps == ()  # 0.4-kW stairs


def test_a_device_that_never_moves_says_so() -> None:
    profile = build_profile("step", 3.0, -3.0, hold_s=2.0)
    [up, _] = analyse(profile, [(t / 10, 0.0) for t in range(61)]).steps
    assert up.delay_s is None and up.to_90_s is None and up.to_100_s is None
