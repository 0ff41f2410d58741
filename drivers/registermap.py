"""Register maps: data files that say where a device keeps each value and in what units.

A map is YAML under config/maps/ (or any path). It is validated when loaded: unknown types,
overlapping points, a scale-factor point that does not exist, or a point the device kind
needs but the map lacks all fail with the file and the point named.

Encoding and decoding live here too, so the Modbus driver and the Modbus simulator share one
reading of every map: a value the simulator writes is the value the driver reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.errors import ConfigError

BUNDLED_MAPS_DIR = Path(__file__).resolve().parent.parent / "config" / "maps"


class DataType(StrEnum):
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"


WIDTH = {DataType.U16: 1, DataType.S16: 1, DataType.U32: 2, DataType.S32: 2, DataType.F32: 2}
_STRUCT = {DataType.U16: "H", DataType.S16: "h", DataType.U32: "I", DataType.S32: "i",
           DataType.F32: "f"}

# Site units: power in kW, state of charge as a fraction, time in seconds.
UNIT_TO_SITE = {"kW": 1.0, "W": 0.001, "%": 0.01, "fraction": 1.0, "s": 1.0, "count": 1.0}

# Points each device kind must have for the controller to drive it.
REQUIRED_POINTS: dict[str, dict[str, Literal["r", "rw"]]] = {
    "battery": {"power": "r", "soc": "r", "power_setpoint": "rw"},
}


class Point(BaseModel):
    """One value in a device's register space."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=65535)
    table: Literal["holding", "input"] = "holding"
    type: DataType
    word_order: Literal["big", "little"] = "big"
    # A fixed factor (site value = raw * scale) or, SunSpec style, the name of a point that
    # holds a power-of-ten exponent (site value = raw * 10**sf). Never both.
    scale: float = 1.0
    scale_factor_point: str | None = None
    unit: Literal["kW", "W", "%", "fraction", "s", "count"]
    access: Literal["r", "rw"] = "r"
    # -1 when the device counts the other way round from the site (e.g. charging positive).
    sign: Literal[1, -1] = 1

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    @model_validator(mode="after")
    def _one_scale(self) -> Point:
        if self.scale_factor_point is not None and self.scale != 1.0:
            raise ValueError("give either scale or scale_factor_point, not both")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.width - 1 > 65535:
            raise ValueError("point runs past register 65535")
        return self


class RegisterMap(BaseModel):
    """A whole device model: its kind and its points by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    kind: Literal["battery"]
    description: str = ""
    points: dict[str, Point]

    def point(self, name: str) -> Point:
        return self.points[name]


@dataclass(frozen=True)
class LoadedMap:
    """A validated map and the file it came from (for error messages)."""

    source: str
    spec: RegisterMap

    def point(self, name: str) -> Point:
        return self.spec.points[name]

    def has(self, name: str) -> bool:
        return name in self.spec.points


def _check_layout(source: str, spec: RegisterMap) -> None:
    owner: dict[tuple[str, int], str] = {}
    for name, point in sorted(spec.points.items(), key=lambda kv: kv[1].address):
        for address in range(point.address, point.address + point.width):
            key = (point.table, address)
            if key in owner:
                raise ConfigError(
                    source, f"points.{name}",
                    f"overlaps point {owner[key]!r} at {point.table} register {address}")
            owner[key] = name
        sf_name = point.scale_factor_point
        if sf_name is not None:
            sf = spec.points.get(sf_name)
            if sf is None:
                raise ConfigError(source, f"points.{name}.scale_factor_point",
                                  f"no point named {sf_name!r} in this map")
            if sf.type is not DataType.S16 or sf.scale_factor_point is not None:
                raise ConfigError(source, f"points.{sf_name}",
                                  "a scale-factor point must be a plain s16")
    for name, access in REQUIRED_POINTS[spec.kind].items():
        if name not in spec.points:
            raise ConfigError(source, f"points.{name}",
                              f"missing: a {spec.kind} map needs this point")
        if access == "rw" and spec.points[name].access != "rw":
            raise ConfigError(source, f"points.{name}.access",
                              "must be rw: the controller writes it")


def resolve_map_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A bundled map name ("battery_generic") or a path, absolute or relative to a site file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_absolute() and relative_to is not None:
            candidate = relative_to / candidate
        return candidate
    return BUNDLED_MAPS_DIR / f"{name_or_path}.yaml"


def load_map(path: Path) -> LoadedMap:
    """Read and validate a register map file; ConfigError names the file and the point."""
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(source, "", "register map file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"not valid YAML: {exc}") from None
    try:
        spec = RegisterMap.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(source, field, first["msg"]) from None
    _check_layout(source, spec)
    return LoadedMap(source=source, spec=spec)


def decode(point: Point, registers: list[int], sf_exponent: int = 0) -> float:
    """Raw registers of one point to a value in site units."""
    words = registers if point.word_order == "big" else list(reversed(registers))
    raw = struct.unpack(f">{_STRUCT[point.type]}", struct.pack(f">{len(words)}H", *words))[0]
    factor = point.scale * (10.0 ** sf_exponent) * UNIT_TO_SITE[point.unit]
    return float(raw) * factor * point.sign


def encode(point: Point, value: float, sf_exponent: int = 0) -> list[int]:
    """A value in site units to the registers of one point, rounded and range-checked."""
    factor = point.scale * (10.0 ** sf_exponent) * UNIT_TO_SITE[point.unit]
    raw_value = value * point.sign / factor
    if point.type is DataType.F32:
        packed = struct.pack(">f", raw_value)
    else:
        as_int = round(raw_value)
        lo, hi = _int_range(point.type)
        if not lo <= as_int <= hi:
            raise ValueError(f"{value} does not fit {point.type} at scale {factor}")
        packed = struct.pack(f">{_STRUCT[point.type]}", as_int)
    words = list(struct.unpack(f">{point.width}H", packed))
    return words if point.word_order == "big" else list(reversed(words))


def _int_range(data_type: DataType) -> tuple[int, int]:
    bits = 16 * WIDTH[data_type]
    if data_type in (DataType.U16, DataType.U32):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
