"""Simulated loads and generators that respond like hardware: what a load draws away from its
demand follows its command after a delay, along a ramp and a first-order lag (a heat pump);
a generator takes a setpoint after a delay, at the simulator's ramp; meters are noisy. Its own
demand is not delayed, and nothing depends on how often the device is asked."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import cast

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.config.loader import load_site
from flexedge.config.schema import FlexibleLoad, Generator
from flexedge.errors import ConfigProblems
from flexedge.simulators.devices.device_models import GeneratorAdapter, LoadAdapter, adapter_for
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.mqtt_sim_load import SimulatedMqttLoad
from tests.support.properties import examples

BUNDLED = Path(__file__).resolve().parents[2] / "flexedge" / "config" / "sites"


def heat_pump(**changes: object) -> LoadModel:
    """A 4-kW load of which half can be shed, or drawn up to 2 kW more into a 1-kWh buffer."""
    values: dict[str, object] = dict(
        profile=[(0, 4.0)],
        curtailable_share=0.5,
        control="setpoint",
        max_extra_kw=2.0,
        extra_buffer_kwh=1.0,
        setpoint_timeout_s=3600,
    )
    values.update(changes)
    return LoadModel(**values)  # type: ignore[arg-type]


def test_a_load_sheds_after_its_delay_then_along_its_ramp() -> None:
    model = heat_pump(response_delay_s=1.0, ramp_kw_per_s=1.0)
    model.command_limit(2.0, now=0.0)  # draw 2 kW instead of 4
    model.advance(0.9)
    assert model.p_kw == pytest.approx(-4.0)  # told, not yet
    model.advance(1.5)
    assert model.p_kw == pytest.approx(-3.5)
    model.advance(10.0)
    assert model.p_kw == pytest.approx(-2.0)
    # Energy along the trajectory: 1 s at 4 kW, a 2-s ramp down to 2 kW, 7 s at 2 kW.
    assert model.consumed_kwh == pytest.approx((4 + 3 * 2 + 7 * 2) / 3600, rel=1e-6)


def test_a_heat_pump_follows_through_a_first_order_lag() -> None:
    model = heat_pump(lag_s=60.0)
    model.command_limit(6.0, now=0.0)  # 2 kW more than its demand
    model.advance(60.0)
    assert model.p_kw == pytest.approx(-(4.0 + 2.0 * (1 - math.exp(-1))), rel=1e-3)
    # What went into the buffer is what it really drew beyond its demand.
    extra_kwh = model.consumed_kwh - 4.0 * 60 / 3600
    assert model.stored_extra_kwh == pytest.approx(extra_kwh, rel=1e-6)
    assert extra_kwh == pytest.approx(2.0 * 60 * math.exp(-1) / 3600, rel=1e-2)


def test_energy_shed_through_the_lag_is_owed_back_in_its_share() -> None:
    model = heat_pump(control="limit", max_extra_kw=0.0, lag_s=5.0, rebound_share=0.5)
    model.command_limit(0.0, now=0.0)
    model.command_limit(None, now=30.0)  # released: the lag carries the shed past it
    model.advance(31.0)
    shed_kwh = 4.0 * 31 / 3600 - model.consumed_kwh
    assert model.rebound_owed_kwh > 0
    # Drawn back from here on: what it owes is a half of what it did not draw.
    assert model.rebound_owed_kwh == pytest.approx(0.5 * shed_kwh, rel=0.05)


def test_an_uncommanded_load_draws_its_sloped_profile_as_declared() -> None:
    slope = [(0, 2.0), (86_399, 7.0)]
    slow, quick = (
        heat_pump(profile=slope, lag_s=120.0, response_delay_s=2.0),
        heat_pump(profile=slope),
    )
    for t in range(0, 1800, 7):
        slow.advance(float(t))
        quick.advance(float(t))
        assert slow.p_kw == quick.p_kw
    assert slow.consumed_kwh == quick.consumed_kwh


def test_a_generator_takes_its_setpoint_after_its_delay() -> None:
    model = GeneratorModel(min_kw=1, max_kw=10, ramp_kw_per_s=2, response_delay_s=0.5)
    model.command(6.0, now=0.0)
    model.advance(0.4)
    assert model.p_kw == 0.0 and not model.running
    model.advance(0.5)
    assert model.p_kw == 0.0 and model.running  # starting
    model.advance(2.0)
    assert model.p_kw == pytest.approx(3.0) and model.running
    model.advance(5.0)
    assert model.p_kw == pytest.approx(6.0)
    ramp_kwh, held_kwh = 0.5 * 3 * 6 / 3600, 1.5 * 6 / 3600
    assert model.energy_kwh == pytest.approx(ramp_kwh + held_kwh, rel=1e-9)


def test_the_simulators_ramp_and_delay_replace_the_files_for_a_generator() -> None:
    site = load_site(BUNDLED / "demo-site.yaml")
    genset = next(d for d in site.config.devices if isinstance(d, Generator))
    slow = genset.model_copy(
        update={"simulator": genset.simulator.model_copy(update={"ramp_kw_per_s": 0.5})}
    )
    adapter = adapter_for(slow, now=0.0)
    assert isinstance(adapter, GeneratorAdapter)
    assert adapter.model.ramp_kw_per_s == 0.5
    assert adapter.model.response_delay_s == genset.simulator.response_delay_s


def test_a_noisy_meter_scatters_the_reading_not_the_energy() -> None:
    site = load_site(BUNDLED / "demo-site.yaml")
    pump = next(d for d in site.config.devices if d.name == "heat-pump")
    noisy = pump.model_copy(
        update={"simulator": pump.simulator.model_copy(update={"measurement_noise_kw": 0.1})}
    )
    adapter = adapter_for(noisy, now=0.0)
    exact = adapter_for(pump, now=0.0)
    assert isinstance(adapter, LoadAdapter) and isinstance(exact, LoadAdapter)
    readings = []
    for t in range(1, 401):
        adapter.advance(float(t))
        exact.advance(float(t))
        readings.append(adapter.readers()["power"]() - exact.model.p_kw)
    assert statistics.pstdev(readings) == pytest.approx(0.1, rel=0.2)
    assert abs(statistics.fmean(readings)) < 0.03
    assert adapter.model.consumed_kwh == exact.model.consumed_kwh


def test_a_lag_on_a_generator_is_refused_naming_the_field(tmp_path: Path) -> None:
    raw = yaml.safe_load((BUNDLED / "demo-site.yaml").read_text(encoding="utf-8"))
    genset = next(d for d in raw["devices"] if d["name"] == "genset")
    genset["simulator"] = {"lag_s": 30}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ConfigProblems) as caught:
        load_site(path)
    assert "simulator.lag_s" in str(caught.value) and "genset" in str(caught.value)


commands = st.lists(
    st.tuples(st.floats(0, 60), st.none() | st.floats(0, 8)), min_size=1, max_size=6
)


@settings(max_examples=examples(200), deadline=None)
@given(
    delay=st.floats(0, 3),
    ramp=st.none() | st.floats(0.1, 20),
    lag=st.floats(0, 30),
    commands=commands,
    polls=st.lists(st.floats(0, 90), max_size=25),
)
def test_a_load_draws_within_its_limits_however_often_it_is_asked(
    delay: float,
    ramp: float | None,
    lag: float,
    commands: list[tuple[float, float | None]],
    polls: list[float],
) -> None:
    """Between its firm part and its demand plus what it may draw extra, and the same energy
    whether it is asked once at the end or at any instants in between."""

    def run(asked: list[float]) -> LoadModel:
        model = heat_pump(response_delay_s=delay, ramp_kw_per_s=ramp, lag_s=lag)
        events = [(t, 0, i) for i, (t, _) in enumerate(commands)]
        for t, is_poll, i in sorted(events + [(t, 1, 0) for t in asked]):
            kw = commands[i][1]
            if is_poll:
                model.advance(t)
                assert 2.0 - 1e-9 <= -model.p_kw <= 6.0 + 1e-9
            else:
                model.command_limit(kw, t)
        model.advance(100.0)
        return model

    quiet, polled = run([]), run(polls)
    assert polled.consumed_kwh == pytest.approx(quiet.consumed_kwh, rel=1e-6, abs=1e-9)
    assert polled.stored_extra_kwh <= 1.0 + 1e-9


def test_an_mqtt_plug_responds_as_the_modbus_load_does() -> None:
    plug = FlexibleLoad.model_validate(
        {
            "name": "plug",
            "kind": "flexible_load",
            "transport": "mqtt",
            "mqtt_device": {"state_topic": "p/state", "command_topic": "p/set"},
            "control": "relay",
            "baseline_profile": [[0, 2.0]],
            "curtailable_share": 1.0,
            "max_kw": 3,
            "simulator": {"response_delay_s": 1.0, "measurement_noise_kw": 0.05, "seed": 3},
        }
    )
    clock = iter([0.0, 0.0, 0.5, 0.5, 2.0] + [2.0 + t / 20 for t in range(1, 101)])
    sim = SimulatedMqttLoad.from_config(plug, clock=lambda: next(clock))
    assert sim.handle_command(b"off")
    assert sim.state()["power"] == pytest.approx(2000.0, abs=250)  # off, not yet
    assert sim.model.p_kw == pytest.approx(-2.0)
    sim.state()
    assert sim.model.p_kw == 0.0  # the relay opened after its 1 s
    readings = [cast(float, sim.state()["power"]) for _ in range(100)]
    assert 25 <= statistics.pstdev(readings) <= 75  # its meter: 50 W of noise
