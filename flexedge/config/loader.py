"""Load a site file: YAML in, a validated SiteConfig out, or a ConfigError naming file and field."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from flexedge.config.cross_references import reference_problems
from flexedge.config.mqtt_settings import resolve_mqtt
from flexedge.config.rating_ranges import rating_problems
from flexedge.config.registermap import LoadedMap, load_map, read_yaml, resolve_map_path
from flexedge.config.schema import SiteConfig
from flexedge.controller.core.orders import accepted_by_powertac_server
from flexedge.errors import ConfigError, ConfigProblems, field_problems

log = logging.getLogger(__name__)

EXAMPLE_SITE = Path(__file__).resolve().parent / "sites" / "example.yaml"
DEMO_SITE = Path(__file__).resolve().parent / "sites" / "demo-site.yaml"
# Mosquitto's access control for a site's three accounts (site, market, operator), written
# for EXAMPLE_SITE; the README's least-privilege section says how to adapt it.
SITE_ACL = Path(__file__).resolve().parent / "mosquitto" / "site.acl"
# Tags pydantic puts into error locations for the device union; not fields of the file.
DEVICE_KINDS = frozenset({"battery", "flexible_load", "generator"})


@dataclass(frozen=True)
class Site:
    """A validated site file with its register maps loaded."""

    path: Path
    config: SiteConfig
    maps: dict[str, LoadedMap]

    @property
    def log_db_path(self) -> Path:
        db = Path(self.config.log_db)
        return db if db.is_absolute() else self.path.parent / db


def _field_path(loc: tuple[int | str, ...], raw: object) -> str:
    """'devices.0.capacity_kwh' reads better as 'devices[0] (battery-1).capacity_kwh'."""
    parts: list[str] = []
    node = raw
    for part in loc:
        if isinstance(part, int):
            label = f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict) and "name" in node:
                    label += f" ({node['name']})"
            parts.append(label)
        elif isinstance(node, dict) and part not in node and part in DEVICE_KINDS:
            continue  # pydantic names the union member (the device kind): not a field
        else:
            parts.append(f".{part}" if parts else part)
            node = node.get(part) if isinstance(node, dict) else None
    return "".join(parts)


def load_site(path: Path, overrides: dict[str, object] | None = None) -> Site:
    """Read and validate a site file. `overrides` replace top-level keys (used by the CLI).
    Raises ConfigProblems (a ConfigError) with every problem found, not just the first."""
    source = str(path)
    raw = read_yaml(path, "site file")
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a site file must be a YAML mapping")
    if overrides:
        raw = {**raw, **overrides}
    problems: list[ConfigError] = []
    try:
        config: SiteConfig | None = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        config = None
        problems += [
            ConfigError(source, problem.field, problem.message)
            for problem in field_problems(
                exc,
                limit=len(exc.errors()),
                name=lambda loc: _field_path(loc, raw),
                conceal=lambda loc: any("password" in str(part) for part in loc),
            )
        ]
    if config is None:
        # The cross-references need a valid file; the register maps are checked anyway.
        problems += _raw_map_problems(path, raw)
        raise ConfigProblems(problems)
    problems += [
        ConfigError(source, field, problem) for field, problem in reference_problems(config)
    ]
    # Files named in the mqtt section are relative to the site file, as log_db is.
    mqtt, mqtt_problems = resolve_mqtt(config.mqtt, path.resolve().parent)
    config = config.model_copy(update={"mqtt": mqtt})
    problems += [ConfigError(source, field, problem) for field, problem in mqtt_problems]
    maps: dict[str, LoadedMap] = {}
    for index, device in enumerate(config.devices):
        try:
            maps[device.name] = _device_map(path, index, device.name, device.map_name, device.kind)
        except ConfigError as exc:
            problems += exc.problems if isinstance(exc, ConfigProblems) else [exc]
            continue
        problems += [
            ConfigError(source, field, problem)
            for field, problem in rating_problems(index, device, maps[device.name])
        ]
    if problems:
        raise ConfigProblems(problems)
    _warn_beyond_powertac(source, config)
    return Site(path=path.resolve(), config=config, maps=maps)


def _device_map(path: Path, index: int, name: object, map_name: str, kind: str) -> LoadedMap:
    """The register map of devices[index], or a ConfigError naming the site file's field
    (ConfigProblems with each of the map's problems)."""
    field = f"devices[{index}] ({name}).register_map"
    try:
        loaded = load_map(resolve_map_path(map_name, relative_to=path.parent))
    except ConfigError as exc:
        found = exc.problems if isinstance(exc, ConfigProblems) else [exc]
        raise ConfigProblems([ConfigError(str(path), field, str(p)) for p in found]) from None
    if loaded.spec.kind != kind:
        raise ConfigError(
            str(path), field, f"map {loaded.spec.model!r} is for a {loaded.spec.kind}, not a {kind}"
        )
    return loaded


def _raw_map_problems(path: Path, raw: dict[object, object]) -> list[ConfigError]:
    """The register-map problems of the device entries that name a map and a known kind,
    for a file that did not validate as a whole."""
    problems: list[ConfigError] = []
    devices = raw.get("devices")
    for index, entry in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(entry, dict) or entry.get("transport", "modbus-tcp") == "mqtt":
            continue
        kind = entry.get("kind", "battery")
        map_name = entry.get("register_map") or f"{kind}_generic"
        if kind not in DEVICE_KINDS or not isinstance(map_name, str):
            continue
        try:
            _device_map(path, index, entry.get("name"), map_name, kind)
        except ConfigError as exc:
            problems += exc.problems if isinstance(exc, ConfigProblems) else [exc]
    return problems


def _warn_beyond_powertac(source: str, config: SiteConfig) -> None:
    """flexedge takes orders in Power TAC's domain range [-1, 2]; its server does not."""
    for index, tariff in enumerate(config.tariffs):
        for order in tariff.orders():
            if not accepted_by_powertac_server(order.exercise_ratio):
                log.warning(
                    "%s: tariffs[%d] (%s): the %s order's exercise_ratio %s would be refused "
                    "by Power TAC's server, which takes broker-issued orders only with "
                    "0 < r <= 1 on tariffs with curtailment; flexedge offers it as an extension",
                    source,
                    index,
                    tariff.id,
                    order.direction,
                    order.exercise_ratio,
                )
