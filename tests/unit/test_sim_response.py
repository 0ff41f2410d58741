"""Simulated devices that respond like hardware: a response delay, a ramp and a first-order
lag between a setpoint and the power it becomes, noise on the meter, the lease still counted
from the write; and none of it depends on how often the device is asked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.config.loader import load_site
from flexedge.errors import ConfigProblems
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.device_models import RespondingBatteryAdapter
from flexedge.simulators.devices.response import NoisyMeter, Response
from tests.support.properties import examples
from tests.unit.test_shell_in_process import fake_site


def test_a_setpoint_takes_effect_after_the_delay_then_ramps() -> None:
    stage = Response(delay_s=0.5, ramp_kw_per_s=10.0)
    stage.command(5.0, 0.0)
    assert stage.output(0.4) == 0.0
    assert stage.output(0.5) == 0.0
    assert stage.output(0.75) == pytest.approx(2.5)
    assert stage.output(1.0) == pytest.approx(5.0)
    assert stage.output(30.0) == 5.0 and stage.idle


def test_a_first_order_lag_reaches_63_percent_after_one_time_constant() -> None:
    stage = Response(lag_s=60.0)
    stage.command(-4.0, 0.0)
    assert stage.output(60.0) == pytest.approx(-4.0 * (1 - math.exp(-1)), rel=1e-3)
    assert stage.output(600.0) == pytest.approx(-4.0, abs=1e-3)


@settings(max_examples=examples(200), deadline=None)
@given(
    delay=st.floats(0, 2),
    ramp=st.none() | st.floats(0.1, 50),
    lag=st.floats(0, 30),
    commands=st.lists(st.tuples(st.floats(0, 20), st.floats(-5, 5)), min_size=1, max_size=5),
    polls=st.lists(st.floats(0, 40), max_size=30),
)
def test_the_output_does_not_depend_on_how_often_it_is_asked(
    delay: float,
    ramp: float | None,
    lag: float,
    commands: list[tuple[float, float]],
    polls: list[float],
) -> None:
    def run(asked: list[float]) -> float:
        stage = Response(delay_s=delay, ramp_kw_per_s=ramp, lag_s=lag)
        events = sorted([(t, "cmd", p) for t, p in commands] + [(t, "ask", 0.0) for t in asked])
        for t, kind, p in events:
            if kind == "cmd":
                stage.command(p, t)
            else:
                stage.output(t)
        return stage.output(45.0)

    assert run(polls) == pytest.approx(run([]), abs=1e-9)


def battery(delay_s: float, ramp: float | None) -> RespondingBatteryAdapter:
    model = BatteryModel(
        capacity_kwh=10,
        soc_min=0.1,
        soc_max=0.9,
        max_charge_kw=5,
        max_discharge_kw=5,
        charge_efficiency=1.0,
        discharge_efficiency=1.0,
        setpoint_timeout_s=10,
    )
    stage = Response(delay_s=delay_s, ramp_kw_per_s=ramp)
    return RespondingBatteryAdapter(model, stage, NoisyMeter(0.0, 1))


def test_a_battery_reads_back_its_setpoint_at_once_and_delivers_along_the_ramp() -> None:
    adapter = battery(delay_s=1.0, ramp=2.0)
    readers = adapter.readers()
    adapter.apply("power_setpoint", 4.0, 0.0)
    assert readers["power_setpoint"]() == 4.0 and readers["power"]() == 0.0  # accepted, not yet
    for t in (0.5, 1.0, 2.0):
        adapter.advance(t)
    assert readers["power"]() == pytest.approx(2.0)  # 1 s of delay, then 1 s at 2 kW/s
    adapter.advance(5.0)
    assert readers["power"]() == pytest.approx(4.0)
    # Energy along the trajectory: 0 for 1 s, a 2-s ramp to 4 kW, then 2 s at 4 kW.
    delivered_kwh = (0.5 * 2 * 4 + 2 * 4) / 3600
    assert adapter.model.discharged_kwh == pytest.approx(delivered_kwh, rel=1e-6)
    # The lease counts from the write: 10 s after it the setpoint is 0 and power ramps down.
    adapter.advance(10.5)
    assert readers["power_setpoint"]() == 0.0
    assert readers["power"]() == pytest.approx(4.0)  # the delay again
    adapter.advance(14.0)
    assert readers["power"]() == pytest.approx(0.0)


def test_absurd_simulator_dynamics_are_refused_naming_the_field(tmp_path: Path) -> None:
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["devices"][0]["simulator"] = {"response_delay_s": -1, "ramp_kw_per_s": 0, "lag_s": 1e9}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigProblems) as caught:
        load_site(path)
    fields = sorted(p.field.rsplit(".", 1)[-1] for p in caught.value.problems)
    assert fields == ["lag_s", "ramp_kw_per_s", "response_delay_s"]
