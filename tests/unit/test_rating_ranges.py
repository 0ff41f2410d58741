"""A device's ratings against its map's registers, checked when the site file is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.config.field_types import MAX_RATING_KW
from flexedge.config.loader import load_site
from flexedge.errors import ConfigError, ConfigProblems
from tests.support.harness import write_site_file

# The battery map as it was: s16 x 0.01 kW stops at 327.67 kW.
NARROW_BATTERY_MAP = {
    "model": "narrow-battery",
    "kind": "battery",
    "points": {
        "power": {"address": 0, "table": "input", "type": "s16", "scale": 0.01, "unit": "kW"},
        "soc": {"address": 1, "table": "input", "type": "u16", "scale": 0.01, "unit": "%"},
        "power_setpoint": {
            "address": 10,
            "type": "s16",
            "scale": 0.01,
            "unit": "kW",
            "access": "rw",
        },
    },
}
# The load map as it was: u16 W stops at 65.535 kW.
NARROW_LOAD_MAP = {
    "model": "narrow-load",
    "kind": "flexible_load",
    "points": {
        "power": {"address": 0, "table": "input", "type": "u16", "unit": "W", "sign": -1},
        "power_limit": {"address": 10, "type": "u16", "unit": "W", "access": "rw"},
    },
}


def battery(name: str, kw: float, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "capacity_kwh": 4 * kw,
        "max_charge_kw": kw,
        "max_discharge_kw": kw,
        **fields,
    }


def load(name: str, kw: float, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "flexible_load",
        "baseline_profile": [[0, kw / 2]],
        "curtailable_share": 0.5,
        "max_kw": kw,
        **fields,
    }


def site_with(tmp_path: Path, *devices: dict[str, Any]) -> Path:
    for name, spec in (("narrow_battery", NARROW_BATTERY_MAP), ("narrow_load", NARROW_LOAD_MAP)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return write_site_file(tmp_path, {"site": "ranges", "devices": list(devices)})


def test_the_bundled_maps_hold_the_largest_ratings_a_site_file_allows(tmp_path: Path) -> None:
    top = MAX_RATING_KW
    site = load_site(
        site_with(
            tmp_path,
            battery("b", top, port=1502),
            load("limit", top, port=1503),
            load("relay", top, control="relay", port=1504),
            load("set", top, control="setpoint", max_extra_kw=top, extra_buffer_kwh=1, port=1505),
            {"name": "g", "kind": "generator", "min_kw": 0, "max_kw": top, "ramp_kw_per_s": 1},
        )
    )
    assert len(site.maps) == 5


def test_a_rating_beyond_the_schema_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_site(site_with(tmp_path, battery("b", MAX_RATING_KW + 1)))
    assert caught.value.field.startswith("devices[0] (b).max_")
    assert "100000" in caught.value.problem


def test_ratings_a_map_cannot_express_are_all_named(tmp_path: Path) -> None:
    path = site_with(
        tmp_path,
        battery("small", 300, register_map="narrow_battery.yaml"),
        battery("big", 500, register_map="narrow_battery.yaml", port=1502),
        load("heater", 70, register_map="narrow_load.yaml", port=1503),
    )
    with pytest.raises(ConfigProblems) as caught:
        load_site(path)
    problems = caught.value.problems
    assert caught.value.source == str(path)
    assert caught.value.field == "devices[1] (big).max_discharge_kw"
    # Both ratings of the big battery (on two points each) and the heater's: every problem.
    assert all(p.source == str(path) and p.field.startswith("devices[") for p in problems)
    assert {p.field for p in problems} == {
        "devices[1] (big).max_discharge_kw",
        "devices[1] (big).max_charge_kw",
        "devices[2] (heater).max_kw",
    }
    message = "\n".join(str(p) for p in problems)
    assert "small" not in message  # 300 kW fits 327.67
    assert "500 kW does not fit point 'power_setpoint'" in message
    assert "-327.68 to 327.67 kW" in message
    assert "narrow_load.yaml" in message and "-65.535 to 0 kW" in message


def test_a_rating_just_inside_a_narrow_map_is_accepted(tmp_path: Path) -> None:
    site = load_site(
        site_with(
            tmp_path,
            battery("b", 327.67, register_map="narrow_battery.yaml"),
            load("heater", 65.5, register_map="narrow_load.yaml", port=1503),
        )
    )
    assert set(site.maps) == {"b", "heater"}


def test_a_profile_above_what_the_power_register_shows_is_refused(tmp_path: Path) -> None:
    heater = load("heater", 60, register_map="narrow_load.yaml")
    heater["baseline_profile"] = [[0, 10], [43200, 80]]
    with pytest.raises(ConfigError) as caught:
        load_site(site_with(tmp_path, heater))
    assert caught.value.field == "devices[0] (heater).baseline_profile"


def test_an_mqtt_device_has_no_registers_to_check(tmp_path: Path) -> None:
    plug = load("plug", 90_000, transport="mqtt", mqtt_device={"state_topic": "p/state"})
    plug["mqtt_device"]["command_topic"] = "p/cmd"
    assert set(load_site(site_with(tmp_path, plug)).maps) == {"plug"}


def test_sunspec_scale_factor_points_are_left_to_the_device(tmp_path: Path) -> None:
    """SunSpec power points take their exponent from a register the device sets (W_SF,
    WChaMax_SF): the range is the device's choice at run time, so the loader checks nothing
    there and a 50 MW storage inverter loads."""
    big = battery("storage", 50_000, register_map="sunspec_storage")
    assert load_site(site_with(tmp_path, big)).maps["storage"].spec.model == "sunspec-storage"


def test_a_percentage_point_is_checked_as_a_share_of_its_rating(tmp_path: Path) -> None:
    """A setpoint in % of the charge rating must hold the discharge rating as such a share."""
    spec = {
        "model": "percent-battery",
        "kind": "battery",
        "points": {
            "power": {"address": 0, "type": "s32", "unit": "W"},
            "soc": {"address": 2, "type": "u16", "unit": "%"},
            "max_charge_power": {"address": 3, "type": "u32", "unit": "W"},
            "power_setpoint": {
                "address": 10,
                "type": "s16",
                "unit": "%",
                "scale_point": "max_charge_power",
                "access": "rw",
            },
        },
    }
    (tmp_path / "percent.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    fits = battery("fits", 100, register_map="percent.yaml")
    lopsided = {**battery("lopsided", 1, register_map="percent.yaml"), "max_discharge_kw": 400}
    assert load_site(site_with(tmp_path, fits)).maps["fits"].spec.model == "percent-battery"
    with pytest.raises(ConfigError) as caught:
        load_site(site_with(tmp_path, lopsided))
    assert caught.value.field == "devices[0] (lopsided).max_discharge_kw"
