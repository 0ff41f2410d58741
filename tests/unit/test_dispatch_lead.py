"""Dispatch plans with a device's response figures (what `flexedge prequalify` measured): it
starts the device on a commitment ahead of the window, and lets it go ahead of the window's
end, by the device's delay plus half its ramp's time, so that the response falls inside the
window instead of after each edge."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.dispatch import (
    AT_ONCE,
    DeviceView,
    ResponseFigures,
    battery_view,
    plan,
)
from flexedge.controller.core.kinds import GeneratorLimits, generator_feasible
from flexedge.controller.core.metering import Sample, attribute
from flexedge.controller.core.model import Commitment, Progress
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.response import Response
from tests.support.core_fixtures import T0, battery, commitment
from tests.support.properties import examples

WINDOW_S = 10.0
KWH = 3.0 * WINDOW_S / 3600  # 3 kW for the window


def view(response: ResponseFigures) -> DeviceView:
    base = battery_view(battery(), 0.5, True, 1.0)
    return DeviceView(base.feasible, response)


def asked(response: ResponseFigures, now: float, kwh: float = KWH) -> float:
    """The setpoint at `now`, the commitment on track (delivered its share of the time)."""
    c = commitment(kwh=kwh, start=T0, end=T0 + WINDOW_S)
    done = min(max(now - T0, 0.0), WINDOW_S) / WINDOW_S
    progress = {"c1": Progress(delivered_kwh=kwh * done)}
    return plan([c], progress, {"b1": view(response)}, now).setpoints["b1"]


def test_the_lead_is_the_delay_and_half_the_ramp() -> None:
    figures = ResponseFigures(delay_s=0.5, ramp_kw_per_s=5.0)
    assert figures.lead_s(3.0) == pytest.approx(0.5 + 0.3)
    assert AT_ONCE.lead_s(3.0) == 0.0


def test_a_device_with_a_delay_is_started_and_let_go_ahead_of_the_window() -> None:
    slow = ResponseFigures(delay_s=1.0)
    assert asked(slow, T0 - 1.5) == 0.0  # before the lead: nothing
    assert asked(slow, T0 - 0.5) == pytest.approx(3.0)  # in the lead: the window's average
    assert asked(slow, T0 + 5.0) == pytest.approx(3.0)
    assert asked(slow, T0 + WINDOW_S - 0.5) == 0.0  # on its way already: let go
    assert asked(AT_ONCE, T0 - 0.5) == 0.0  # a device that answers at once waits
    assert asked(AT_ONCE, T0 + WINDOW_S - 0.5) == pytest.approx(3.0)


def test_a_generator_is_started_ahead_by_half_its_ramp() -> None:
    limits = GeneratorLimits("g", 1.0, 10.0, 2.0)
    figures = ResponseFigures(0.0, 2.0)  # 6 kW at 2 kW/s: 3 s of ramp, half of it ahead
    c = commitment(kwh=6.0 * 15 / 3600, start=T0, end=T0 + 15, shares=(("g", 1.0),))
    for now, expected in ((T0 - 1.6, 0.0), (T0 - 1.4, 1.0)):  # from stopped: its minimum
        views = {"g": DeviceView(generator_feasible(limits, 0.0, 1.0), figures)}
        assert plan([c], {}, views, now).setpoints["g"] == pytest.approx(expected)


def test_the_lead_is_at_most_half_the_window() -> None:
    very_slow = ResponseFigures(delay_s=60.0)
    assert asked(very_slow, T0 - WINDOW_S / 2 - 0.1) == 0.0
    assert asked(very_slow, T0 - WINDOW_S / 2 + 0.1) == pytest.approx(3.0)


def test_a_lead_never_spills_to_backups() -> None:
    c = commitment(kwh=KWH, start=T0, end=T0 + WINDOW_S, backups=("b2",))
    views = {"b1": view(ResponseFigures(delay_s=1.0)), "b2": view(AT_ONCE)}
    result = plan([c], {}, views, T0 + WINDOW_S - 0.5)
    assert result.setpoints == {"b1": 0.0, "b2": 0.0}


def test_in_its_let_go_a_device_is_metered_by_what_is_still_on_its_way() -> None:
    """An up and a down commitment on one battery, let go together: the battery is told 0,
    and what it still delivers (their net) is shared by what each was on its way with, not
    split evenly between them."""
    down = commitment("down", kwh=-4.0 * WINDOW_S / 3600, start=T0, end=T0 + WINDOW_S)
    up = commitment("up", kwh=2.0 * WINDOW_S / 3600, start=T0, end=T0 + WINDOW_S)
    now = T0 + WINDOW_S - 0.5
    views = {"b1": view(ResponseFigures(delay_s=1.0))}
    result = plan([down, up], {}, views, now)
    assert result.setpoints["b1"] == 0.0
    allocations = result.allocations["b1"]
    assert allocations == pytest.approx({"down": -4.0, "up": 2.0})
    # The interval the battery still delivers its net -2 kW for.
    a, b = Sample(now, -2.0), Sample(T0 + WINDOW_S, -2.0)
    windows = {"down": (T0, T0 + WINDOW_S), "up": (T0, T0 + WINDOW_S)}
    got = attribute(a, b, windows, allocations, max_gap_s=5.0).energy_kwh
    assert got["down"] == pytest.approx(-4.0 * 0.5 / 3600)
    assert got["up"] == pytest.approx(2.0 * 0.5 / 3600)


@settings(max_examples=examples(200), deadline=None)
@given(
    delay=st.floats(min_value=0.0, max_value=8.0),
    ramp=st.none() | st.floats(min_value=0.5, max_value=50.0),
    kwh=st.floats(min_value=-0.02, max_value=0.02).filter(lambda k: abs(k) > 1e-5),
    offset=st.floats(min_value=-10.0, max_value=20.0),
)
def test_nothing_is_asked_outside_the_window_shifted_by_its_lead(
    delay: float, ramp: float | None, kwh: float, offset: float
) -> None:
    figures = ResponseFigures(delay, ramp)
    lead = min(figures.lead_s(kwh * 3600 / WINDOW_S), WINDOW_S / 2)
    now = T0 + offset
    setpoint = asked(figures, now, kwh)
    feasible = view(figures).feasible
    assert feasible is not None and feasible.allows(setpoint)
    let_go = min(delay, WINDOW_S / 2)  # let go its delay (not its ramp) before the end
    if not T0 - lead <= now < T0 + WINDOW_S - let_go:
        assert setpoint == 0.0
    elif now < T0:
        assert setpoint == pytest.approx(feasible.clip(kwh * 3600 / WINDOW_S))


def run_window(device: Response, figures: ResponseFigures) -> tuple[float, float]:
    """A closed loop at 2 Hz on one battery that answers as `device` does: the energy in the
    window, and the energy after it (kWh). The meter integrates the device's output."""
    c: Commitment = commitment(kwh=KWH, start=T0, end=T0 + WINDOW_S)
    progress = Progress()
    inside = after = 0.0
    t = T0 - 3.0
    step = 0.05
    while t < T0 + WINDOW_S + 5.0:
        if round((t - T0) / step) % 10 == 0:  # every 0.5 s: a tick
            result = plan([c], {"c1": progress}, {"b1": view(figures)}, t)
            device.command(result.setpoints["b1"], t)
        kwh = (device.output(t) + device.output(t + step)) / 2 * step / 3600
        if T0 <= t < T0 + WINDOW_S:
            inside += kwh
            progress.add("b1", kwh, step)
        elif t >= T0 + WINDOW_S:
            after += kwh
        t += step
    return inside, after


@pytest.mark.parametrize(("delay", "ramp"), [(0.5, 5.0), (1.0, 2.0), (2.0, None)])
def test_with_its_figures_a_slow_device_delivers_inside_the_window(
    delay: float, ramp: float
) -> None:
    """Without its figures the loop catches a late start up with more power, and the device's
    late response runs on past the window, into the next; with them the window still gets its
    energy, and what spills after it is cut (by 1.7-7 times here: most where the delay is
    longest against the ramp)."""
    figures = ResponseFigures(delay, ramp)
    blind_inside, blind_after = run_window(Response(delay_s=delay, ramp_kw_per_s=ramp), AT_ONCE)
    inside, after = run_window(Response(delay_s=delay, ramp_kw_per_s=ramp), figures)
    assert blind_inside == pytest.approx(KWH, rel=0.02)
    assert inside == pytest.approx(KWH, rel=0.02)
    assert abs(after) < abs(blind_after) / 1.5


def run_generator_window(figures: ResponseFigures) -> tuple[float, float]:
    """The same loop on the simulator's generator (1-10 kW at 1 kW/s), 6 kW for 15 s."""
    window, kwh = 15.0, 6.0 * 15 / 3600
    c = commitment(kwh=kwh, start=T0, end=T0 + window, shares=(("g", 1.0),))
    limits = GeneratorLimits("g", 1.0, 10.0, 1.0)
    machine = GeneratorModel(
        min_kw=1, max_kw=10, ramp_kw_per_s=1.0, setpoint_timeout_s=30, now=T0 - 5
    )
    progress = Progress()
    inside = after = 0.0
    t, step = T0 - 5.0, 0.05
    while t < T0 + window + 15.0:
        if round((t - T0) / step) % 10 == 0:
            machine.advance(t)
            view = DeviceView(generator_feasible(limits, machine.p_kw, 0.5), figures)
            machine.command(plan([c], {"c1": progress}, {"g": view}, t).setpoints["g"], t)
        before = machine.energy_kwh
        machine.advance(t + step)
        kwh_step = machine.energy_kwh - before
        if T0 <= t < T0 + window:
            inside += kwh_step
            progress.add("g", kwh_step, step)
        elif t >= T0 + window:
            after += kwh_step
        t += step
    return inside / kwh, after


def test_a_slow_generator_started_ahead_delivers_and_runs_on_less() -> None:
    """Started late, the loop catches up with more power, which the generator then has to ramp
    down from after the window; started ahead by half its ramp, it runs on about half as
    much."""
    blind_ratio, blind_after = run_generator_window(AT_ONCE)
    ratio, after = run_generator_window(ResponseFigures(0.0, 1.0))
    assert blind_ratio == pytest.approx(1.0, abs=0.02)
    assert ratio == pytest.approx(1.0, abs=0.02)
    assert after < blind_after * 0.6
