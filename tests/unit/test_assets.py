"""How each device kind turns a planned setpoint into a driver command (plain data)."""

from __future__ import annotations

import pytest

from flexedge.controller.core.dispatch import plan
from flexedge.controller.core.kinds import GeneratorLimits, LoadLimits, profile_kw
from flexedge.controller.daemon.assets import GeneratorAsset, LoadAsset
from flexedge.drivers.base import Reading
from tests.support.core_fixtures import T0, commitment

MIDNIGHT = T0 - T0 % 86400


def load_asset(relay: bool = False) -> LoadAsset:
    return LoadAsset(LoadLimits("l1", 0.5, relay), ((0.0, 4.0), (43200.0, 8.0)))


def reading(asset: str, p_kw: float) -> Reading:
    return Reading(asset=asset, ts=T0, p_kw=p_kw, soc=None, available=True)


def test_load_baseline_is_its_declared_profile() -> None:
    asset = load_asset()
    assert asset.baseline_kw(MIDNIGHT + 21600) == pytest.approx(-6.0)
    assert profile_kw(asset.profile, MIDNIGHT + 21600) == pytest.approx(6.0)


def test_load_at_baseline_is_released_not_capped() -> None:
    asset = load_asset()
    now = MIDNIGHT
    assert asset.command(asset.baseline_kw(now), now) is None
    assert asset.command(-3.0, now) == -3.0


def test_curtailment_commitment_caps_the_load_within_its_curtailable_share() -> None:
    asset = load_asset()
    now = MIDNIGHT  # demand 4 kW, 2 kW curtailable
    views = {"l1": asset.view(reading("l1", -4.0), True, 1.0, now)}
    up = commitment(kwh=0.05, start=now, end=now + 36, shares=(("l1", 1.0),))  # asks 5 kW
    result = plan([up], {}, views, now)
    assert result.setpoints["l1"] == pytest.approx(-2.0)  # never below the firm part
    assert asset.command(result.setpoints["l1"], now) == pytest.approx(-2.0)


def test_relay_load_sheds_all_or_nothing() -> None:
    asset = load_asset(relay=True)
    now = MIDNIGHT
    views = {"l1": asset.view(reading("l1", -4.0), True, 1.0, now)}
    small = commitment(kwh=0.005, start=now, end=now + 36, shares=(("l1", 1.0),))  # 0.5 kW
    assert plan([small], {}, views, now).setpoints["l1"] == pytest.approx(-4.0)
    big = commitment(kwh=0.015, start=now, end=now + 36, shares=(("l1", 1.0),))  # 1.5 kW
    assert plan([big], {}, views, now).setpoints["l1"] == pytest.approx(-2.0)


def test_generator_is_commanded_within_ramp_reach_and_returns_to_schedule() -> None:
    asset = GeneratorAsset(GeneratorLimits("g1", 2.0, 10.0, 0.5, baseline_kw=4.0))
    views = {"g1": asset.view(reading("g1", 4.0), True, 2.0, T0)}
    up = commitment(kwh=0.05, end=T0 + 36, shares=(("g1", 1.0),))  # asks +5 kW
    assert plan([up], {}, views, T0).setpoints["g1"] == pytest.approx(5.0)
    assert asset.safe_command() == 4.0
    assert asset.view(reading("g1", 4.0), False, 2.0, T0).feasible is None
