"""Dispatch on plain data: setpoints stay inside limits, the loop catches up a shortfall."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.dispatch import battery_view, commitment_power, plan, spread_clip
from flexedge.controller.core.model import Progress
from tests.support.core_fixtures import T0, battery, commitment
from tests.support.properties import examples


def test_one_commitment_spreads_energy_over_the_time_left() -> None:
    c = commitment(kwh=0.02, end=T0 + 36)  # 0.02 kWh over 36 s = 2 kW
    result = plan([c], {}, {"b1": battery_view(battery(), 0.5, True, 1.0)}, T0)
    assert abs(result.setpoints["b1"] - 2.0) < 1e-9
    assert abs(result.allocations["b1"]["c1"] - 2.0) < 1e-9


def test_shortfall_is_caught_up_over_the_rest_of_the_window() -> None:
    c = commitment(kwh=0.02, end=T0 + 36)
    # Half the window gone, a quarter of the energy delivered: 0.015 kWh in 18 s = 3 kW.
    result = plan(
        [c],
        {"c1": Progress(delivered_kwh=0.005)},
        {"b1": battery_view(battery(), 0.5, True, 1.0)},
        T0 + 18,
    )
    assert abs(result.setpoints["b1"] - 3.0) < 1e-9


def test_overdelivery_never_reverses_the_direction() -> None:
    c = commitment(kwh=0.02)
    assert commitment_power(c, Progress(delivered_kwh=0.03), T0 + 5) == 0.0


def test_power_is_clipped_to_the_rating_and_allocations_follow() -> None:
    c1 = commitment("c1", kwh=0.05, end=T0 + 36)  # 5 kW
    c2 = commitment("c2", kwh=0.03, end=T0 + 36)  # 3 kW
    result = plan([c1, c2], {}, {"b1": battery_view(battery(), 0.5, True, 1.0)}, T0)
    assert result.setpoints["b1"] == 5.0
    assert abs(result.allocations["b1"]["c1"] - 5.0 * 5 / 8) < 1e-9
    assert abs(sum(result.allocations["b1"].values()) - 5.0) < 1e-9


def test_empty_battery_is_not_discharged() -> None:
    limits = battery()
    views = {"b1": battery_view(limits, limits.soc_floor, True, 1.0)}
    result = plan([commitment(kwh=0.02)], {}, views, T0)
    assert result.setpoints["b1"] == 0.0


def test_unavailable_device_gets_no_setpoint_and_its_share_moves() -> None:
    c = commitment(kwh=0.02, end=T0 + 36, shares=(("b1", 0.5), ("b2", 0.5)))
    views = {
        "b1": battery_view(battery("b1"), 0.5, False, 1.0),
        "b2": battery_view(battery("b2"), 0.5, True, 1.0),
    }
    result = plan([c], {}, views, T0)
    assert "b1" not in result.setpoints
    assert abs(result.setpoints["b2"] - 2.0) < 1e-9


def test_commitment_outside_its_window_asks_nothing() -> None:
    c = commitment(start=T0 + 10, end=T0 + 20)
    assert commitment_power(c, None, T0) == 0.0
    assert commitment_power(c, None, T0 + 20) == 0.0


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=3), st.floats(-50, 50, allow_nan=False), min_size=1, max_size=6
    ),
    st.floats(-50, 50, allow_nan=False),
)
def test_spread_clip_parts_add_up_to_the_target(requests: dict[str, float], target: float) -> None:
    result = spread_clip(requests, target)
    if any(requests.values()):
        assert abs(sum(result.values()) - target) < 1e-6


socs = st.floats(0.0, 1.0)
energies = st.floats(-0.5, 0.5, allow_nan=False).filter(lambda e: abs(e) > 1e-6)


@settings(max_examples=examples(300))
@given(
    soc=socs,
    kwhs=st.lists(energies, min_size=1, max_size=5),
    delivered=st.lists(st.floats(-0.5, 0.5), min_size=5, max_size=5),
    offset=st.floats(0, 59.9),
    horizon=st.floats(0.1, 5),
    max_charge=st.floats(0.5, 50),
    max_discharge=st.floats(0.5, 50),
)
def test_setpoint_never_leaves_the_battery_limits(
    soc: float,
    kwhs: list[float],
    delivered: list[float],
    offset: float,
    horizon: float,
    max_charge: float,
    max_discharge: float,
) -> None:
    limits = battery(max_charge_kw=max_charge, max_discharge_kw=max_discharge)
    commitments = [commitment(f"c{i}", kwh=k, end=T0 + 60) for i, k in enumerate(kwhs)]
    progress = {f"c{i}": Progress(delivered_kwh=d) for i, d in enumerate(delivered)}
    now = T0 + offset
    result = plan(commitments, progress, {"b1": battery_view(limits, soc, True, horizon)}, now)
    p = result.setpoints["b1"]
    assert -max_charge - 1e-9 <= p <= max_discharge + 1e-9
    # Holding p for the horizon keeps the SoC window (energy at the bus side).
    energy = p * horizon / 3600
    assert energy <= limits.dischargeable_kwh(soc) + 1e-9
    assert -energy <= limits.chargeable_kwh(soc) + 1e-9
    assert abs(sum(result.allocations["b1"].values()) - p) < 1e-6
