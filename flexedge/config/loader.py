"""Load a site file: YAML in, a validated SiteConfig out, or a ConfigError naming file and field."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from flexedge.config.cross_references import reference_problems
from flexedge.config.rating_ranges import rating_problems
from flexedge.config.registermap import LoadedMap, load_map, read_yaml, resolve_map_path
from flexedge.config.schema import SiteConfig
from flexedge.controller.core.orders import accepted_by_powertac_server
from flexedge.errors import ConfigError, field_problems

log = logging.getLogger(__name__)

EXAMPLE_SITE = Path(__file__).resolve().parent / "sites" / "example.yaml"
DEMO_SITE = Path(__file__).resolve().parent / "sites" / "demo-site.yaml"
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
    """Read and validate a site file. `overrides` replace top-level keys (used by the CLI)."""
    source = str(path)
    raw = read_yaml(path, "site file")
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a site file must be a YAML mapping")
    if overrides:
        raw = {**raw, **overrides}
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as exc:
        first = field_problems(
            exc,
            name=lambda loc: _field_path(loc, raw),
            conceal=lambda loc: any("password" in str(part) for part in loc),
        )[0]
        raise ConfigError(source, first.field, first.message) from None
    problems = reference_problems(config)
    if problems:
        field, problem = problems[0]
        raise ConfigError(source, field, problem)
    _warn_beyond_powertac(source, config)
    maps: dict[str, LoadedMap] = {}
    ranges: list[tuple[str, str]] = []
    for index, device in enumerate(config.devices):
        map_path = resolve_map_path(device.map_name, relative_to=path.parent)
        try:
            loaded = load_map(map_path)
        except ConfigError as exc:
            raise ConfigError(
                source, f"devices[{index}] ({device.name}).register_map", str(exc)
            ) from None
        if loaded.spec.kind != device.kind:
            raise ConfigError(
                source,
                f"devices[{index}] ({device.name}).register_map",
                f"map {loaded.spec.model!r} is for a {loaded.spec.kind}, not a {device.kind}",
            )
        maps[device.name] = loaded
        ranges.extend(rating_problems(index, device, loaded))
    if ranges:
        raise _all_problems(source, ranges)
    return Site(path=path.resolve(), config=config, maps=maps)


def _all_problems(source: str, problems: list[tuple[str, str]]) -> ConfigError:
    """One error for several problems: the first as its field, every one on its own line
    (file: field: problem), so an operator fixes them all in one go."""
    (field, problem), *others = problems
    more = "".join(f"\n{source}: {f}: {p}" for f, p in others)
    return ConfigError(source, field, problem + more)


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
