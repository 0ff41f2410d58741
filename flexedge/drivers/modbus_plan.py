"""What a Modbus driver sends for a register map, whatever the transport: the read plan (few,
large read requests) and the point a setpoint is written to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from flexedge.config.registermap import LoadedMap, RegisterMap
from flexedge.errors import ConfigError

MAX_READ_COUNT = 125  # Modbus limit for FC3/FC4


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers of `table` from `address`, covering `points`."""

    table: Literal["holding", "input"]
    address: int
    count: int
    points: tuple[str, ...]


def plan_reads(
    spec: RegisterMap, names: Iterable[str] | None = None, max_count: int = MAX_READ_COUNT
) -> tuple[ReadBlock, ...]:
    """Fewest requests that read `names` (default: all points): points of one table that are
    back to back share a request. A gap is bridged only when the map declares every register
    in it (another point, a constant, an unimplemented run: a SunSpec model block), since
    devices (and the simulator) may answer ILLEGAL_ADDRESS for registers the map does not."""
    wanted = sorted(
        spec.points if names is None else set(names),
        key=lambda n: (spec.points[n].table, spec.points[n].address),
    )
    served = set(spec.fixed_registers())
    served.update(
        (p.table, a) for p in spec.points.values() for a in range(p.address, p.address + p.width)
    )
    blocks: list[ReadBlock] = []
    for name in wanted:
        point = spec.points[name]
        last = blocks[-1] if blocks else None
        span = 0 if last is None else point.address + point.width - last.address
        if (
            last is not None
            and last.table == point.table
            and span <= max_count
            and all(
                (point.table, a) in served for a in range(last.address + last.count, point.address)
            )
        ):
            blocks[-1] = ReadBlock(last.table, last.address, span, (*last.points, name))
        else:
            blocks.append(ReadBlock(point.table, point.address, point.width, (name,)))
    return tuple(blocks)


# The control of a load with a consumption setpoint: power_setpoint with setpoint_enable.
LOAD_SETPOINT = "load_setpoint"


def control_point(register_map: LoadedMap) -> str:
    """How write_setpoint commands the device: power_setpoint for batteries and generators;
    for a flexible load its writable power_limit (a cap), else its relay, else its consumption
    setpoint (LOAD_SETPOINT); the map validation guarantees one of them."""
    spec = register_map.spec
    if spec.kind != "flexible_load":
        return "power_setpoint"
    for name in ("power_limit", "relay"):
        if name in spec.points and spec.points[name].access == "rw":
            return name
    if "power_setpoint" in spec.points and spec.points["power_setpoint"].access == "rw":
        return LOAD_SETPOINT  # its map validation guarantees setpoint_enable with it
    raise ConfigError(
        register_map.source,
        "points.power_limit",
        "a flexible_load map needs an rw power_limit, relay or power_setpoint point",
    )
