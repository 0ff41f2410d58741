"""Load and generator physics on plain values."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from tests.support.properties import examples


def load(**changes: object) -> LoadModel:
    values: dict[str, object] = dict(
        profile=[(0, 4.0)], curtailable_share=0.5, control="limit", rebound_share=0.5, rebound_s=100
    )
    values.update(changes)
    return LoadModel(**values)  # type: ignore[arg-type]


def test_profile_interpolates_and_wraps_midnight() -> None:
    model = load(profile=[(0, 2.0), (43200, 6.0)])
    assert model.profile_kw(21600) == pytest.approx(4.0)
    assert model.profile_kw(64800) == pytest.approx(4.0)  # back down towards midnight
    assert model.profile_kw(86400 + 43200) == pytest.approx(6.0)


def test_limit_never_sheds_the_firm_part() -> None:
    model = load()
    model.command_limit(0.0, now=0)
    assert model.p_kw == pytest.approx(-2.0)  # half of 4 kW is firm
    model.command_limit(3.0, now=1)
    assert model.p_kw == pytest.approx(-3.0)


def test_relay_sheds_all_of_the_curtailable_part_at_once() -> None:
    model = load(control="relay")
    model.command_limit(3.9, now=0)
    assert model.p_kw == pytest.approx(-2.0)


def test_release_draws_back_part_of_the_shed_energy() -> None:
    model = load(setpoint_timeout_s=1000)
    model.command_limit(0.0, now=0)
    model.advance(360)  # 2 kW shed for 0.1 h: 0.2 kWh, half of it owed back
    assert model.rebound_owed_kwh == pytest.approx(0.1)
    model.command_limit(None, now=360)
    assert model.p_kw < -4.0  # demand plus rebound
    model.advance(360 + 2000)
    assert model.rebound_owed_kwh < 0.001


def test_lease_end_releases_the_limit() -> None:
    model = load(setpoint_timeout_s=5)
    model.command_limit(0.0, now=0)
    model.advance(6)
    assert model.limit_kw is None


@settings(max_examples=examples(200))
@given(
    limits=st.lists(st.one_of(st.none(), st.floats(0, 10)), min_size=1, max_size=10),
    noise=st.floats(0, 2),
    share=st.floats(0, 1),
)
def test_load_never_draws_below_its_firm_part_nor_injects(
    limits: list[float | None],
    noise: float,
    share: float,
) -> None:
    model = load(noise_kw=noise, curtailable_share=share, setpoint_timeout_s=1000)
    for i, limit in enumerate(limits):
        model.command_limit(limit, now=i * 7.5)
        drawn = -model.p_kw
        assert drawn >= 0.0
        assert drawn >= model.demand_kw(i * 7.5) * (1 - share) - 1e-9


def setpoint_load(**changes: object) -> LoadModel:
    values: dict[str, object] = dict(
        control="setpoint",
        max_extra_kw=2.0,
        extra_buffer_kwh=0.01,
        rebound_share=0.0,
        setpoint_timeout_s=1000,
    )
    values.update(changes)
    return load(**values)


def test_a_setpoint_load_draws_what_it_is_told_less_or_more_within_its_range() -> None:
    model = setpoint_load()
    model.command_limit(3.0, now=0)
    assert model.p_kw == pytest.approx(-3.0)  # curtailed by 1 kW
    model.command_limit(1.0, now=1)
    assert model.p_kw == pytest.approx(-2.0)  # never below its firm half
    model.command_limit(5.0, now=2)
    assert model.p_kw == pytest.approx(-5.0)  # 1 kW more than its demand
    model.command_limit(9.0, now=3)
    assert model.p_kw == pytest.approx(-6.0)  # at most 2 kW more


def test_a_setpoint_load_cannot_draw_more_once_its_buffer_is_full_and_gives_it_back() -> None:
    model = setpoint_load()
    model.command_limit(6.0, now=0)  # 2 kW more: 0.01 kWh fill the buffer in 18 s
    model.advance(17)
    assert model.p_kw == pytest.approx(-6.0)
    model.advance(19)
    assert model.stored_extra_kwh == pytest.approx(0.01)
    assert model.p_kw == pytest.approx(-4.0)  # full: only its demand, however long
    model.advance(600)
    assert model.p_kw == pytest.approx(-4.0)
    assert model.consumed_kwh == pytest.approx(4.0 * 600 / 3600 + 0.01, abs=2e-4)
    model.command_limit(None, now=600)
    assert -4.0 < model.p_kw <= -2.0  # released: it draws less while it gives the store back
    model.advance(600 + 2000)
    assert model.stored_extra_kwh < 1e-4
    assert model.p_kw == pytest.approx(-4.0)


@settings(max_examples=examples(200))
@given(
    commands=st.lists(st.one_of(st.none(), st.floats(0, 12)), min_size=1, max_size=20),
    gap_s=st.floats(1, 60),
)
@example(commands=[0.0, 0.0, 0.0, 0.0, None], gap_s=51.0)  # a release after owed rebound
def test_a_setpoint_load_never_takes_more_extra_energy_than_its_buffer(
    commands: list[float | None], gap_s: float
) -> None:
    model = setpoint_load(rebound_share=0.5)
    for i, command in enumerate(commands):
        model.command_limit(command, now=i * gap_s)
        assert -model.p_kw >= 2.0 - 1e-9  # never below the firm part
        if command is not None:
            # Commanded: at most demand + max_extra_kw. Released, it may draw owed rebound
            # on top of its demand (rebound_share), which is not extra energy.
            assert -model.p_kw <= 6.0 + 1e-9
        assert model.stored_extra_kwh <= 0.01 + 1e-12
    model.advance(len(commands) * gap_s)
    assert model.stored_extra_kwh <= 0.01 + 1e-12


def test_only_a_setpoint_load_can_draw_more() -> None:
    with pytest.raises(ValueError, match="consumption setpoint"):
        load(max_extra_kw=1.0)


def test_generator_ramps_to_its_setpoint_and_stops_below_minimum() -> None:
    gen = GeneratorModel(min_kw=2.0, max_kw=10.0, ramp_kw_per_s=1.0, setpoint_timeout_s=100)
    gen.command(6.0, now=0)
    gen.advance(3)
    assert gen.p_kw == pytest.approx(3.0)
    gen.advance(10)
    assert gen.p_kw == pytest.approx(6.0)
    assert gen.energy_kwh == pytest.approx((6 * 6 / 2 + 6 * 4) / 3600)  # ramp, then flat
    gen.command(1.0, now=10)  # below minimum: stop
    gen.advance(20)
    assert gen.p_kw == 0.0 and not gen.running


def test_generator_lease_returns_to_fallback() -> None:
    gen = GeneratorModel(min_kw=1.0, max_kw=5.0, ramp_kw_per_s=10.0, setpoint_timeout_s=2)
    gen.command(5.0, now=0)
    gen.advance(1)
    assert gen.p_kw == 5.0
    gen.advance(10)
    assert gen.p_kw == 0.0


@settings(max_examples=examples(200))
@given(
    setpoints=st.lists(st.floats(-5, 20), min_size=1, max_size=12),
    gaps=st.lists(st.floats(0.01, 5), min_size=12, max_size=12),
)
def test_generator_output_stays_in_its_limits_and_ramp(
    setpoints: list[float],
    gaps: list[float],
) -> None:
    gen = GeneratorModel(min_kw=2.0, max_kw=10.0, ramp_kw_per_s=0.5, setpoint_timeout_s=1000)
    now = 0.0
    for setpoint, gap in zip(setpoints, gaps, strict=False):
        before = gen.p_kw
        gen.command(setpoint, now)
        now += gap
        gen.advance(now)
        assert 0.0 <= gen.p_kw <= 10.0
        assert abs(gen.p_kw - before) <= 0.5 * gap + 1e-9
