"""Register-map loading: the bundled map is valid; each kind of bad map names file and point."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.config.registermap import BUNDLED_MAPS_DIR, DataType, load_map, resolve_map_path
from flexedge.errors import ConfigError

BASE: dict[str, Any] = {
    "model": "test-battery",
    "kind": "battery",
    "points": {
        "power": {"address": 0, "table": "input", "type": "s16", "scale": 0.01, "unit": "kW"},
        "soc": {"address": 1, "table": "input", "type": "u16", "scale": 0.01, "unit": "%"},
        "power_setpoint": {
            "address": 10,
            "table": "holding",
            "type": "s16",
            "scale": 0.01,
            "unit": "kW",
            "access": "rw",
        },
    },
}


def write_map(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_bundled_generic_map_loads() -> None:
    path = resolve_map_path("battery_generic")
    assert path == BUNDLED_MAPS_DIR / "battery_generic.yaml"
    loaded = load_map(path)
    assert loaded.source == str(path)
    assert loaded.spec.kind == "battery"
    setpoint = loaded.point("power_setpoint")
    assert (setpoint.table, setpoint.access, setpoint.type) == ("holding", "rw", DataType.S32)
    assert loaded.has("setpoint_timeout")
    assert {loaded.point(n).table for n in ("power", "soc")} == {"input"}


def test_same_address_in_other_table_is_not_an_overlap(tmp_path: Path) -> None:
    spec = copy.deepcopy(BASE)
    spec["points"]["status"] = {"address": 0, "table": "holding", "type": "u16", "unit": "count"}
    assert load_map(write_map(tmp_path, spec)).point("status").address == 0


def _with(change: str) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    points = spec["points"]
    if change == "overlap":
        points["extra"] = {"address": 1, "table": "input", "type": "u16", "unit": "%"}
    elif change == "overlap_wide":
        points["wide"] = {"address": 9, "table": "holding", "type": "u32", "unit": "W"}
    elif change == "unknown_type":
        points["soc"]["type"] = "u64"
    elif change == "missing_required":
        del points["soc"]
    elif change == "missing_sf_point":
        del points["power"]["scale"]
        points["power"]["scale_factor_point"] = "w_sf"
    elif change == "rw_declared_r":
        points["power_setpoint"]["access"] = "r"
    return spec


@pytest.mark.parametrize(
    ("change", "field", "mentions"),
    [
        ("unknown_type", "points.soc.type", "u16"),
        ("missing_required", "points.soc", "missing"),
        ("missing_sf_point", "points.power.scale_factor_point", "w_sf"),
        ("rw_declared_r", "points.power_setpoint.access", "rw"),
    ],
)
def test_bad_map_names_file_and_point(
    tmp_path: Path, change: str, field: str, mentions: str
) -> None:
    path = write_map(tmp_path, _with(change))
    with pytest.raises(ConfigError) as caught:
        load_map(path)
    error = caught.value
    assert error.source == str(path)
    assert error.field == field
    assert str(error).startswith(f"{path}: {field}: ")
    assert mentions in error.problem


@pytest.mark.parametrize(
    ("change", "pair", "register"),
    [
        ("overlap", {"extra", "soc"}, "input register 1"),
        ("overlap_wide", {"wide", "power_setpoint"}, "holding register 10"),
    ],
)
def test_overlap_names_file_both_points_and_register(
    tmp_path: Path, change: str, pair: set[str], register: str
) -> None:
    """Either point of the pair may be the one blamed (the later in address order); the
    message must name the other one and the shared register."""
    path = write_map(tmp_path, _with(change))
    with pytest.raises(ConfigError) as caught:
        load_map(path)
    error = caught.value
    assert error.source == str(path)
    blamed = error.field.removeprefix("points.")
    assert blamed in pair
    (other,) = pair - {blamed}
    assert repr(other) in error.problem
    assert register in error.problem


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as caught:
        load_map(path)
    assert caught.value.source == str(path)
