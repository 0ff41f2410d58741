"""Site-file loading: the example loads with its values; bad files name file and field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from flexedge.config.loader import EXAMPLE_SITE, load_site
from flexedge.config.registermap import BUNDLED_MAPS_DIR
from flexedge.config.schema import BalancingConstants, Battery, FlexibleLoad, SiteConfig
from flexedge.errors import ConfigError
from tests.support.harness import write_site_file

Raw = dict[str, Any]


def example_raw() -> Raw:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


# --- the example site -----------------------------------------------------------------------


def test_example_site_loads_with_its_values() -> None:
    site = load_site(EXAMPLE_SITE)
    cfg = site.config

    assert site.path == EXAMPLE_SITE.resolve()
    assert cfg.site == "example-site"
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix) == ("127.0.0.1", 1883, "flexedge")
    assert cfg.mqtt.password is None
    assert cfg.slot_seconds == 30
    assert cfg.control_period_s == 1.0
    assert cfg.delivery_tolerance == 0.02  # not in the file: the default
    assert cfg.log_db == "example-site.sqlite"
    assert site.log_db_path == EXAMPLE_SITE.parent / "example-site.sqlite"

    assert cfg.balancing == BalancingConstants(
        enable_balancing_market=True,
        balancing_spot_trade_ratio=0.2,
        balancing_offer_demand_ratio=0.1,
        balancing_offer_supply_ratio=0.1,
        balancing_flexible_loads_support=True,
    )

    rates = cfg.asset_registry["battery-1"]
    assert (rates.demand_rate_ct_per_kwh, rates.supply_rate_ct_per_kwh) == (33.0, 35.0)

    [tariff] = cfg.tariffs
    assert (tariff.id, tariff.assets, tariff.exercise_ratio, tariff.price_per_kwh) == (
        "tariff-1",
        ["battery-1"],
        1.5,
        0.12,
    )

    [battery] = cfg.devices
    assert isinstance(battery, Battery)
    assert cfg.device("battery-1") is battery
    assert battery.name == "battery-1"
    assert (battery.kind, battery.transport) == ("battery", "modbus-tcp")
    assert (battery.host, battery.port, battery.unit_id) == ("127.0.0.1", 5020, 1)
    assert battery.register_map == "battery_generic"
    assert battery.timeout_s == 1.0  # default
    assert battery.capacity_kwh == 10.0
    assert (battery.soc_min, battery.soc_max, battery.reserve_soc) == (0.1, 0.95, 0.05)
    assert (battery.max_charge_kw, battery.max_discharge_kw) == (5.0, 5.0)
    assert (battery.charge_efficiency, battery.discharge_efficiency) == (0.95, 0.95)
    assert battery.setpoint_timeout_s == 10
    assert battery.simulator.initial_soc == 0.6

    assert set(site.maps) == {"battery-1"}
    loaded = site.maps["battery-1"]
    assert loaded.source == str(BUNDLED_MAPS_DIR / "battery_generic.yaml")
    assert loaded.spec.kind == "battery"
    assert loaded.has("power_setpoint")


def test_example_loads_from_a_copy_and_overrides_replace_top_level_keys(tmp_path: Path) -> None:
    path = write_site_file(tmp_path, example_raw())
    site = load_site(path, overrides={"slot_seconds": 60, "log_db": "other.sqlite"})
    assert site.config.slot_seconds == 60
    assert site.log_db_path == tmp_path.resolve() / "other.sqlite"
    # The overrides went through validation too.
    with pytest.raises(ConfigError) as info:
        load_site(path, overrides={"slot_seconds": 1})
    assert info.value.field == "slot_seconds"


def test_d3a_constants_default_when_balancing_section_is_omitted(tmp_path: Path) -> None:
    raw = example_raw()
    del raw["balancing"]
    balancing = load_site(write_site_file(tmp_path, raw)).config.balancing

    assert balancing.enable_balancing_market is False
    assert balancing.balancing_spot_trade_ratio == 0.2
    assert balancing.balancing_offer_demand_ratio == 0.1
    assert balancing.balancing_offer_supply_ratio == 0.1
    assert balancing.balancing_flexible_loads_support is True
    assert balancing.cover_with_other_assets is True
    assert balancing == BalancingConstants()


def test_minimal_site_takes_documented_defaults(tmp_path: Path) -> None:
    raw: Raw = {
        "site": "tiny",
        "devices": [{"name": "b1", "capacity_kwh": 5, "max_charge_kw": 2, "max_discharge_kw": 2}],
    }
    cfg = load_site(write_site_file(tmp_path, raw)).config
    assert cfg.slot_seconds == 900
    assert cfg.mqtt.port == 1883
    assert cfg.asset_registry == {} and cfg.tariffs == []
    assert cfg.devices[0].map_name == "battery_generic"  # the kind's bundled map
    assert isinstance(cfg.devices[0], Battery)
    assert (cfg.devices[0].soc_min, cfg.devices[0].soc_max) == (0.1, 0.95)


# --- bad site files -------------------------------------------------------------------------


def _set(*keys: str | int, value: Any) -> Callable[[Raw, Path], None]:
    def mutate(raw: Raw, _: Path) -> None:
        node: Any = raw
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def _drop_capacity(raw: Raw, _: Path) -> None:
    del raw["devices"][0]["capacity_kwh"]


def _top_level_typo(raw: Raw, _: Path) -> None:
    raw["slot_secnds"] = raw.pop("slot_seconds")


def _device_typo(raw: Raw, _: Path) -> None:
    raw["devices"][0]["soc_maxx"] = raw["devices"][0].pop("soc_max")


def _soc_window_equal(raw: Raw, _: Path) -> None:
    raw["devices"][0].update(soc_min=0.5, reserve_soc=0.25, soc_max=0.75)


def _soc_window_above(raw: Raw, _: Path) -> None:
    raw["devices"][0].update(soc_min=0.6, reserve_soc=0.3, soc_max=0.8)


def _registry_ghost(raw: Raw, _: Path) -> None:
    raw["asset_registry"]["ghost-asset"] = {
        "demand_rate_ct_per_kwh": 1,
        "supply_rate_ct_per_kwh": 2,
    }


def _tariff_ghost(raw: Raw, _: Path) -> None:
    raw["tariffs"][0]["assets"] = ["battery-1", "ghost-asset"]


def _duplicate_device(raw: Raw, _: Path) -> None:
    raw["devices"].append(copy.deepcopy(raw["devices"][0]))


def _wrong_kind_map(raw: Raw, tmp_path: Path) -> None:
    spec = yaml.safe_load((BUNDLED_MAPS_DIR / "battery_generic.yaml").read_text(encoding="utf-8"))
    spec["kind"] = "heat_pump"
    (tmp_path / "heatpump_map.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    raw["devices"][0]["register_map"] = "heatpump_map.yaml"


DEVICE = "devices[0] (battery-1)"

# (id, mutation of the example, substrings the message must hold after "FILE: ")
BAD_SITES: list[tuple[str, Callable[[Raw, Path], None], tuple[str, ...]]] = [
    ("missing-capacity", _drop_capacity, (f"{DEVICE}.capacity_kwh", "required")),
    ("slot-seconds-not-int", _set("slot_seconds", value="abc"), ("slot_seconds", "'abc'")),
    ("top-level-typo", _top_level_typo, ("slot_secnds", "not permitted")),
    ("device-typo", _device_typo, (f"{DEVICE}.soc_maxx", "not permitted")),
    (
        "exercise-ratio-2.5",
        _set("tariffs", 0, "exercise_ratio", value=2.5),
        ("tariffs[0].exercise_ratio", "2.5"),
    ),
    (
        "exercise-ratio-minus-1.5",
        _set("tariffs", 0, "exercise_ratio", value=-1.5),
        ("tariffs[0].exercise_ratio", "-1.5"),
    ),
    (
        "exercise-ratio-zero",
        _set("tariffs", 0, "exercise_ratio", value=0),
        ("tariffs[0]", "exercise_ratio"),
    ),
    ("soc-window-equal", _soc_window_equal, (DEVICE, "soc_min", "reserve_soc", "soc_max")),
    ("soc-window-above", _soc_window_above, (DEVICE, "soc_min", "reserve_soc", "soc_max")),
    ("registry-unknown-device", _registry_ghost, ("asset_registry", "ghost-asset")),
    ("tariff-unknown-asset", _tariff_ghost, ("tariffs", "ghost-asset")),
    ("duplicate-device-names", _duplicate_device, ("devices", "battery-1")),
    (
        "unknown-register-map",
        _set("devices", 0, "register_map", value="no_such_map"),
        (f"{DEVICE}.register_map", "no_such_map", "not found"),
    ),
    (
        "register-map-wrong-kind",
        _wrong_kind_map,
        (f"{DEVICE}.register_map", "heatpump_map.yaml", "kind"),
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [case[1:] for case in BAD_SITES], ids=[case[0] for case in BAD_SITES]
)
def test_bad_site_file_names_file_and_field(
    tmp_path: Path,
    mutate: Callable[[Raw, Path], None],
    expected: tuple[str, ...],
) -> None:
    raw = example_raw()
    mutate(raw, tmp_path)
    path = write_site_file(tmp_path, raw)

    with pytest.raises(ConfigError) as info:
        load_site(path)

    message = str(info.value)
    assert info.value.source == str(path)
    # The tmp path holds the test id, so look for the field only after the "FILE: " prefix.
    prefix = f"{path}: "
    assert message.startswith(prefix), message
    rest = message[len(prefix) :]
    for needle in expected:
        assert needle in rest, f"{needle!r} not in {message!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: [unclosed\n  devices: : :\n", "not valid YAML"),
        ("site: x\n\tdevices: []\n", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
    ],
    ids=["unclosed-flow", "tab-indent", "list-not-mapping", "empty-file"],
)
def test_unreadable_site_file_names_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write_site_file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_site_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "site.yaml"
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert info.value.source == str(path)
    assert str(info.value) == f"{path}: site file not found"


# --- secrets --------------------------------------------------------------------------------

PASSWORD = "hunter2-Zq9-secret"


def test_mqtt_password_never_shown(tmp_path: Path) -> None:
    raw = example_raw()
    raw["mqtt"].update(username="edge", password=PASSWORD)
    site = load_site(write_site_file(tmp_path, raw))
    cfg = site.config

    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == PASSWORD
    for shown in (repr(cfg), str(cfg), repr(cfg.mqtt), str(cfg.mqtt), repr(site), str(site)):
        assert PASSWORD not in shown
    assert "**" in repr(cfg.mqtt)
    assert cfg.mqtt.username == "edge"


def test_mqtt_password_not_shown_when_another_field_is_wrong(tmp_path: Path) -> None:
    raw = example_raw()
    raw["mqtt"].update(password=PASSWORD, port=70000)
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, raw))
    assert info.value.field == "mqtt.port"
    assert PASSWORD not in str(info.value)


def test_mqtt_password_of_wrong_type_not_echoed_in_error(tmp_path: Path) -> None:
    # An unquoted numeric password is a likely slip; the schema promises SecretStr keeps the
    # password out of error messages, so the ConfigError must not echo the value back.
    raw = example_raw()
    raw["mqtt"]["password"] = 918273645
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, raw))
    assert info.value.field == "mqtt.password"
    assert "918273645" not in str(info.value)


def test_schema_rejects_directly_built_bad_config() -> None:
    # The loader is not the only way in: the model itself refuses a bad tariff ratio.
    raw = example_raw()
    raw["tariffs"][0]["exercise_ratio"] = 2.0000001
    with pytest.raises(ValueError, match="exercise_ratio"):
        SiteConfig.model_validate(raw)
    raw["tariffs"][0]["exercise_ratio"] = 2.0
    assert SiteConfig.model_validate(raw).tariffs[0].exercise_ratio == 2.0
    raw["tariffs"][0]["exercise_ratio"] = -1.0
    assert SiteConfig.model_validate(raw).tariffs[0].exercise_ratio == -1.0


def _load(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "name": "ev",
        "kind": "flexible_load",
        "baseline_profile": [[0, 3.0]],
        "curtailable_share": 0.5,
        "max_kw": 11,
    }
    values.update(changes)
    return values


def test_a_load_that_can_draw_more_takes_a_setpoint_and_a_buffer() -> None:
    ev = FlexibleLoad.model_validate(
        _load(control="setpoint", max_extra_kw=4.0, extra_buffer_kwh=0.5)
    )
    assert (ev.max_extra_kw, ev.extra_buffer_kwh, ev.map_name) == (
        4.0,
        0.5,
        "flexible_load_setpoint",
    )
    # Defaults keep today's loads: nothing more to draw, the limit map.
    plain = FlexibleLoad.model_validate(_load())
    assert (plain.max_extra_kw, plain.map_name) == (0.0, "flexible_load_generic")
    for changes, needle in (
        ({"max_extra_kw": 4.0, "extra_buffer_kwh": 0.5}, "max_extra_kw needs control 'setpoint'"),
        ({"control": "setpoint", "max_extra_kw": 4.0}, "needs extra_buffer_kwh > 0"),
    ):
        with pytest.raises(ValidationError, match=needle):
            FlexibleLoad.model_validate(_load(**changes))


def test_a_tariff_may_hold_an_up_and_a_down_order_and_old_files_still_load() -> None:
    raw = example_raw()
    [single] = SiteConfig.model_validate(raw).tariffs
    assert [(o.direction, o.exercise_ratio, o.price_per_kwh) for o in single.orders()] == [
        ("up", 1.5, 0.12)
    ]
    raw["tariffs"][0]["second_order"] = {"exercise_ratio": -0.5, "price_per_kwh": -0.1}
    [pair] = SiteConfig.model_validate(raw).tariffs
    assert [(o.direction, o.exercise_ratio) for o in pair.orders()] == [("up", 1.5), ("down", -0.5)]


@pytest.mark.parametrize(
    ("second_ratio", "needle"),
    [
        (0.5, "second_order: exercise_ratio 0.5 is an up order, not a down order"),
        (-1.5, "second_order.exercise_ratio"),
        (0.0, "exercise_ratio 0 offers nothing"),
    ],
)
def test_a_second_order_must_be_of_the_other_direction_and_in_range(
    tmp_path: Path, second_ratio: float, needle: str
) -> None:
    raw = example_raw()
    raw["tariffs"][0]["second_order"] = {"exercise_ratio": second_ratio, "price_per_kwh": 0.1}
    with pytest.raises(ConfigError) as info:
        load_site(write_site_file(tmp_path, raw))
    assert info.value.field.startswith("tariffs[0]")
    assert needle in f"{info.value.field}: {info.value}"


def test_ratios_powertac_would_refuse_are_warned_about_naming_file_and_tariff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = example_raw()
    raw["tariffs"][0]["exercise_ratio"] = 0.8
    path = write_site_file(tmp_path, raw)
    load_site(path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    raw["tariffs"][0]["second_order"] = {"exercise_ratio": -0.5, "price_per_kwh": -0.1}
    load_site(write_site_file(tmp_path, raw))
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"{path}: tariffs[0] (tariff-1): the down order's exercise_ratio -0.5" in warning
    assert "0 < r <= 1 on tariffs with curtailment" in warning
