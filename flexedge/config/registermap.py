"""Register maps: data files that say where a device keeps each value and in what units.

A map is YAML under flexedge/config/maps/ (or any path). It is validated when loaded: unknown types,
overlapping points, a scale-factor point that does not exist, or a point the device kind
needs but the map lacks all fail with the file and the point named.

Besides points (values in site units) a map may declare registers the device serves but
flexedge never interprets: `constants` (SunSpec's "SunS" marker, model ids and lengths,
nameplate strings) and `unimplemented` runs (filled with SunSpec's "not implemented" value per
type), so that a client reading a whole SunSpec model block gets no ILLEGAL_ADDRESS; and
`init_writes`, point writes the driver makes on every connect (e.g. enabling SunSpec 124's
charge/discharge rate registers).

Encoding and decoding (register_codec.py, re-exported here) are shared by the Modbus driver and
the Modbus simulator, so both read every map alike: a value the simulator writes is the value
the driver reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flexedge.config.register_codec import UNIT_TO_SITE as UNIT_TO_SITE
from flexedge.config.register_codec import WIDTH as WIDTH
from flexedge.config.register_codec import DataType as DataType
from flexedge.config.register_codec import decode as decode
from flexedge.config.register_codec import encode as encode
from flexedge.errors import ConfigError, ConfigProblems, field_problems

BUNDLED_MAPS_DIR = Path(__file__).resolve().parent / "maps"


# Points each device kind must have for the controller to drive it.
REQUIRED_POINTS: dict[str, dict[str, Literal["r", "rw"]]] = {
    "battery": {"power": "r", "soc": "r", "power_setpoint": "rw"},
    "flexible_load": {"power": "r"},
    "generator": {"power": "r", "power_setpoint": "rw"},
}
# ... and at least one of these writable points: how the controller acts on the device.
CONTROL_POINTS: dict[str, tuple[str, ...]] = {
    "flexible_load": ("power_limit", "relay", "power_setpoint"),
}
# A load's consumption setpoint comes with the switch that says whether it follows it (1) or
# its own demand (0): a release is not a value of the setpoint itself.
LOAD_SETPOINT_ENABLE = "setpoint_enable"

# What a register reads when the device does not implement it (SunSpec's convention), by the
# type the map gives the run: enum16/bitfield16 are u16, sunssf and pad are s16, bitfield32 is
# u32, accumulators (`acc`) and strings read 0.
FillType = Literal["u16", "s16", "u32", "s32", "f32", "acc", "str"]
NOT_IMPLEMENTED: dict[str, tuple[int, ...]] = {
    "u16": (0xFFFF,),
    "s16": (0x8000,),
    "u32": (0xFFFF, 0xFFFF),
    "s32": (0x8000, 0x0000),
    "f32": (0x7FC0, 0x0000),
    "acc": (0x0000,),
    "str": (0x0000,),
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
    # Percentage registers (SunSpec 124 OutWRte is "% of WChaMax"): the value is a share of
    # the current site value of this other point, so site value = raw * scale * that value.
    scale_point: str | None = None
    # Points that get the same site value in the same write request; with this one they cover
    # one contiguous run of registers, so the device takes them atomically (SunSpec 124 pins
    # its charge/discharge window [-OutWRte, InWRte] to one value this way).
    write_with: tuple[str, ...] = ()

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


class Constant(BaseModel):
    """Registers with a fixed value: a marker, a model id or length, a nameplate string.
    The simulator serves them read-only; the driver never reads them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=65535)
    table: Literal["holding", "input"] = "holding"
    type: DataType | Literal["str"]
    word_order: Literal["big", "little"] = "big"
    length: int | None = Field(default=None, ge=1)  # registers; strings only
    value: int | float | str

    @property
    def width(self) -> int:
        return WIDTH[self.type] if isinstance(self.type, DataType) else self.length or 0

    def registers(self) -> list[int]:
        if not isinstance(self.type, DataType):
            # SunSpec strings: bytes in register order, NUL-padded to the full length.
            data = str(self.value).encode("utf-8").ljust(2 * self.width, b"\0")
            return list(struct.unpack(f">{self.width}H", data))
        point = Point(
            address=self.address, type=self.type, unit="count", word_order=self.word_order
        )
        return encode(point, float(self.value))

    @model_validator(mode="after")
    def _value_fits(self) -> Constant:
        if not isinstance(self.type, DataType):
            if not isinstance(self.value, str) or self.length is None:
                raise ValueError("a str constant needs a string value and a length (registers)")
            size = len(self.value.encode("utf-8"))
            if size > 2 * self.length:
                raise ValueError(
                    f"{self.value!r} is {size} bytes, more than the "
                    f"{2 * self.length} that length {self.length} holds"
                )
        elif self.length is not None or isinstance(self.value, str):
            raise ValueError("length and string values are for type str only")
        elif self.type is not DataType.F32 and not float(self.value).is_integer():
            raise ValueError(f"{self.value} is not a whole number for type {self.type}")
        else:
            self.registers()  # ValueError when the value does not fit the type
        if self.address + self.width - 1 > 65535:
            raise ValueError("constant runs past register 65535")
        return self


class Unimplemented(BaseModel):
    """A run of registers the device serves but does not implement, read as the type's
    "not implemented" value (NOT_IMPLEMENTED). Writes to them are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=65535)
    table: Literal["holding", "input"] = "holding"
    type: FillType
    count: int = Field(default=1, ge=1)  # registers, a whole number of values of `type`

    @property
    def width(self) -> int:
        return self.count

    def registers(self) -> list[int]:
        pattern = NOT_IMPLEMENTED[self.type]
        return list(pattern) * (self.count // len(pattern))

    @model_validator(mode="after")
    def _whole_values(self) -> Unimplemented:
        if self.count % len(NOT_IMPLEMENTED[self.type]):
            raise ValueError(f"count {self.count} is not a whole number of {self.type} values")
        if self.address + self.count - 1 > 65535:
            raise ValueError("run goes past register 65535")
        return self


class InitWrite(BaseModel):
    """A point write (site units) the driver makes on every connect, before anything else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    point: str
    value: float


class RegisterMap(BaseModel):
    """A whole device model: its kind and its points by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    kind: Literal["battery", "flexible_load", "generator"]
    description: str = ""
    points: dict[str, Point]
    constants: dict[str, Constant] = {}
    unimplemented: list[Unimplemented] = []
    init_writes: list[InitWrite] = []

    def point(self, name: str) -> Point:
        return self.points[name]

    def fixed_blocks(self) -> list[Constant | Unimplemented]:
        """Constants and unimplemented runs: registers served with a value of their own."""
        return [*self.constants.values(), *self.unimplemented]

    def fixed_registers(self) -> dict[tuple[str, int], int]:
        """(table, address) -> value of every register of the constants and unimplemented runs."""
        fixed: dict[tuple[str, int], int] = {}
        for block in self.fixed_blocks():
            for offset, value in enumerate(block.registers()):
                fixed[(block.table, block.address + offset)] = value
        return fixed


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
    _check_overlaps(source, spec)
    for name, point in spec.points.items():
        _check_references(source, spec, name, point)
    for index, write in enumerate(spec.init_writes):
        target = spec.points.get(write.point)
        if target is None or target.access != "rw" or target.table != "holding":
            raise ConfigError(
                source,
                f"init_writes[{index}].point",
                f"{write.point!r} is not an rw holding point of this map",
            )
    for name, access in REQUIRED_POINTS[spec.kind].items():
        if name not in spec.points:
            raise ConfigError(
                source, f"points.{name}", f"missing: a {spec.kind} map needs this point"
            )
        if access == "rw" and spec.points[name].access != "rw":
            raise ConfigError(
                source, f"points.{name}.access", "must be rw: the controller writes it"
            )
    controls = CONTROL_POINTS.get(spec.kind, ())
    if controls and not any(spec.points.get(n) and spec.points[n].access == "rw" for n in controls):
        raise ConfigError(
            source,
            f"points.{controls[0]}",
            f"missing: a {spec.kind} map needs an rw point named {' or '.join(controls)}",
        )
    setpoint = spec.points.get("power_setpoint")
    if spec.kind == "flexible_load" and setpoint is not None and setpoint.access == "rw":
        enable = spec.points.get(LOAD_SETPOINT_ENABLE)
        if enable is None or enable.access != "rw":
            raise ConfigError(
                source,
                f"points.{LOAD_SETPOINT_ENABLE}",
                "missing: a flexible_load map with an rw power_setpoint needs an rw "
                "setpoint_enable (1 follow the setpoint, 0 release) to release the load",
            )


def _check_overlaps(source: str, spec: RegisterMap) -> None:
    """No register belongs to two points, constants or unimplemented runs; the later one in
    address order is blamed and the message names the other."""
    blocks: list[tuple[str, str, Point | Constant | Unimplemented]] = [
        *((f"points.{n}", f"point {n!r}", p) for n, p in spec.points.items()),
        *((f"constants.{n}", f"constant {n!r}", c) for n, c in spec.constants.items()),
        *(
            (f"unimplemented[{i}]", f"unimplemented[{i}]", u)
            for i, u in enumerate(spec.unimplemented)
        ),
    ]
    owner: dict[tuple[str, int], str] = {}
    for field, label, block in sorted(blocks, key=lambda b: b[2].address):
        for address in range(block.address, block.address + block.width):
            key = (block.table, address)
            if key in owner:
                raise ConfigError(
                    source, field, f"overlaps {owner[key]} at {block.table} register {address}"
                )
            owner[key] = label


def _check_references(source: str, spec: RegisterMap, name: str, point: Point) -> None:
    """The points a point names (scale factor, scale point, write_with) exist and fit."""
    sf_name = point.scale_factor_point
    if sf_name is not None:
        sf = spec.points.get(sf_name)
        if sf is None:
            raise ConfigError(
                source,
                f"points.{name}.scale_factor_point",
                f"no point named {sf_name!r} in this map",
            )
        if sf.type is not DataType.S16 or sf.scale_factor_point is not None:
            raise ConfigError(
                source, f"points.{sf_name}", "a scale-factor point must be a plain s16"
            )
    base = point.scale_point
    if base is not None:
        # One level only: the driver reads a scale point's value before the points using it.
        target = spec.points.get(base)
        if target is None or base == name or target.scale_point is not None:
            raise ConfigError(
                source,
                f"points.{name}.scale_point",
                f"{base!r} is not another point without a scale_point",
            )
    if point.write_with:
        run = [point]
        for partner in point.write_with:
            other = spec.points.get(partner)
            if other is None or partner == name or other.write_with:
                raise ConfigError(
                    source,
                    f"points.{name}.write_with",
                    f"{partner!r} is not another point without write_with",
                )
            run.append(other)
        run.sort(key=lambda p: p.address)
        if any(p.access != "rw" or p.table != "holding" for p in run) or any(
            a.address + a.width != b.address for a, b in pairwise(run)
        ):
            raise ConfigError(
                source,
                f"points.{name}.write_with",
                "with this point they must be rw holding points covering one "
                "contiguous run of registers",
            )


def resolve_map_path(name_or_path: str, relative_to: Path | None = None) -> Path:
    """A bundled map name ("battery_generic") or a path, absolute or relative to a site file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_absolute() and relative_to is not None:
            candidate = relative_to / candidate
        return candidate
    return BUNDLED_MAPS_DIR / f"{name_or_path}.yaml"


def read_yaml(path: Path, what: str) -> object:
    """A YAML file's content, or a ConfigError naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "", f"{what} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"not valid YAML: {exc}") from None


def load_map(path: Path) -> LoadedMap:
    """Read and validate a register map file; ConfigError names the file and the point."""
    source = str(path)
    raw = read_yaml(path, "register map file")
    try:
        spec = RegisterMap.model_validate(raw)
    except ValidationError as exc:
        # "points.soc.type", "unimplemented[3]": list items as in site-file errors.
        found = field_problems(exc, limit=len(exc.errors()), show_input=False)
        raise ConfigProblems([ConfigError(source, p.field, p.message) for p in found]) from None
    _check_layout(source, spec)
    return LoadedMap(source=source, spec=spec)
