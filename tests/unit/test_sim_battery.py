"""Property tests of the simulator's battery physics (flexedge/simulators/devices/battery.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.config.schema import Battery
from flexedge.simulators.devices.battery import BatteryModel
from tests.support.properties import examples


@dataclass(frozen=True)
class Step:
    """Wait `dt` seconds, then optionally command a setpoint and/or change the lease."""

    dt: float
    setpoint: float | None
    timeout: float | None


@st.composite
def models(draw: st.DrawFn) -> BatteryModel:
    soc_min = draw(st.floats(0.0, 0.5))
    soc_max = draw(st.floats(soc_min + 0.01, 1.0))
    return BatteryModel(
        capacity_kwh=draw(st.floats(0.1, 200.0)),
        soc_min=soc_min,
        soc_max=soc_max,
        max_charge_kw=draw(st.floats(0.1, 100.0)),
        max_discharge_kw=draw(st.floats(0.1, 100.0)),
        charge_efficiency=draw(st.floats(0.5, 1.0)),
        discharge_efficiency=draw(st.floats(0.5, 1.0)),
        setpoint_timeout_s=draw(st.floats(1.0, 3600.0)),
        initial_soc=draw(st.floats(soc_min, soc_max)),
        now=draw(st.floats(-1e6, 1e6)),
    )


steps = st.lists(
    st.builds(
        Step,
        dt=st.one_of(st.just(0.0), st.floats(0.0, 7200.0)),
        setpoint=st.one_of(st.none(), st.just(0.0), st.floats(-250.0, 250.0)),
        timeout=st.one_of(st.none(), st.none(), st.floats(1.0, 3600.0)),
    ),
    max_size=30,
)


def stored(model: BatteryModel) -> float:
    return model.soc * model.capacity_kwh


@settings(max_examples=examples(300), deadline=None)
@given(model=models(), plan=steps)
def test_physics_invariants(model: BatteryModel, plan: list[Step]) -> None:
    """SoC window, ratings, energy balance and the lease, checked after every step.

    The test keeps its own record of the lease (last command time, timeout, setpoint in force)
    so the revert is checked against the specification rather than the model's internals.
    """
    start_kwh = stored(model)
    now = model.time
    last_command = now
    timeout = model.timeout_s
    setpoint = 0.0  # the setpoint in force, by the specification
    for step in plan:
        before_kwh = stored(model)
        before_out = model.discharged_kwh - model.charged_kwh
        t0 = now
        now += step.dt
        model.advance(now)

        # The setpoint in force at t0 holds until the lease runs out, then 0.
        live_until = last_command + timeout
        clipped = min(max(setpoint, -model.max_charge_kw), model.max_discharge_kw)
        live_s = max(0.0, min(now, live_until) - t0)
        if now >= live_until:
            setpoint = 0.0
        assert model.setpoint_kw == setpoint
        if setpoint == 0.0:
            assert model.p_kw == 0.0

        # Terminal energy over the step is exactly clipped setpoint x live time when the SoC
        # ended strictly inside the window (power has one sign within a step, so it cannot
        # have touched a bound and come back); at most that, same sign, otherwise.
        expected_out = clipped * live_s / 3600.0
        out = (model.discharged_kwh - model.charged_kwh) - before_out
        if model.soc_min < model.soc < model.soc_max:
            assert out == pytest.approx(expected_out, rel=1e-9, abs=1e-9)
        else:
            assert abs(out) <= abs(expected_out) + 1e-9
            assert out * expected_out >= 0.0
        # Stored energy moves opposite to terminal energy.
        delta_kwh = stored(model) - before_kwh
        assert delta_kwh <= 1e-9 if out >= 0 else delta_kwh >= -1e-9

        if step.setpoint is not None:
            model.command(step.setpoint, now)
            last_command = now
            setpoint = step.setpoint
        if step.timeout is not None:
            model.set_timeout(step.timeout, now)
            timeout = step.timeout
            if now >= last_command + timeout:
                setpoint = 0.0  # a shortened lease that already ran out reverts at once
        assert model.setpoint_kw == setpoint
        assert model.timeout_s == timeout

        assert model.soc_min <= model.soc <= model.soc_max
        assert -model.max_charge_kw <= model.p_kw <= model.max_discharge_kw

    balance = (
        model.charged_kwh * model.charge_efficiency
        - model.discharged_kwh / model.discharge_efficiency
    )
    assert math.isclose(stored(model) - start_kwh, balance, rel_tol=0.0, abs_tol=1e-9)


def example_model(**overrides: float) -> BatteryModel:
    params: dict[str, float] = {
        "capacity_kwh": 10.0,
        "soc_min": 0.1,
        "soc_max": 0.9,
        "max_charge_kw": 4.0,
        "max_discharge_kw": 5.0,
        "charge_efficiency": 0.9,
        "discharge_efficiency": 0.8,
        "setpoint_timeout_s": 60.0,
        "initial_soc": 0.5,
    }
    params.update(overrides)
    return BatteryModel(**params)


def test_discharge_stops_exactly_at_soc_min() -> None:
    model = example_model(setpoint_timeout_s=3600.0)
    model.command(5.0, 0.0)
    # 0.4 x 10 kWh of room at 5 kW / 0.8 = 6.25 kW drawn: empty after 0.64 h = 2304 s.
    model.advance(2000.0)
    assert model.p_kw == 5.0
    model.advance(2400.0)
    assert model.soc == 0.1
    assert model.p_kw == 0.0
    assert model.discharged_kwh == pytest.approx(5.0 * 2304.0 / 3600.0)
    # Charging is still allowed at soc_min, clipped to the 4 kW charge rating.
    model.command(-10.0, 2400.0)
    assert model.setpoint_kw == -10.0
    assert model.p_kw == -4.0


def test_lease_reverts_setpoint_at_expiry() -> None:
    model = example_model(setpoint_timeout_s=30.0)
    model.command(-2.0, 100.0)
    model.advance(129.999)
    assert model.p_kw == -2.0
    model.advance(1000.0)
    assert model.setpoint_kw == 0.0
    assert model.p_kw == 0.0
    # Charged for exactly 30 s, not until 1000 s.
    assert model.charged_kwh == pytest.approx(2.0 * 30.0 / 3600.0)


def test_shortened_timeout_reverts_from_the_change() -> None:
    model = example_model(setpoint_timeout_s=60.0)
    model.command(1.0, 0.0)
    model.set_timeout(5.0, now=20.0)  # lease (5 s) ran out before the change: revert at 20 s
    assert model.setpoint_kw == 0.0
    model.advance(100.0)
    assert model.discharged_kwh == pytest.approx(1.0 * 20.0 / 3600.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        example_model().set_timeout(bad)


def test_time_must_not_go_backwards() -> None:
    model = example_model()
    model.advance(10.0)
    with pytest.raises(ValueError, match="backwards"):
        model.advance(9.0)


def test_from_config_takes_site_fields() -> None:
    battery = Battery.model_validate(
        {
            "name": "b1",
            "capacity_kwh": 12,
            "max_charge_kw": 3,
            "max_discharge_kw": 6,
            "soc_min": 0.2,
            "soc_max": 0.8,
            "setpoint_timeout_s": 7,
            "simulator": {"initial_soc": 0.7},
        }
    )
    model = BatteryModel.from_config(battery, now=5.0)
    assert (model.capacity_kwh, model.soc, model.time) == (12.0, 0.7, 5.0)
    assert (model.max_charge_kw, model.max_discharge_kw, model.timeout_s) == (3.0, 6.0, 7.0)


def test_initial_soc_outside_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="initial_soc"):
        example_model(initial_soc=0.05)
