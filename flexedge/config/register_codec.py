"""Register types, and a value in site units to and from the registers of one map point."""

from __future__ import annotations

import math
import struct
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # registermap imports this module: its Point only annotates here
    from flexedge.config.registermap import Point


class DataType(StrEnum):
    U16 = "u16"
    S16 = "s16"
    U32 = "u32"
    S32 = "s32"
    F32 = "f32"


WIDTH = {DataType.U16: 1, DataType.S16: 1, DataType.U32: 2, DataType.S32: 2, DataType.F32: 2}
_STRUCT = {
    DataType.U16: "H",
    DataType.S16: "h",
    DataType.U32: "I",
    DataType.S32: "i",
    DataType.F32: "f",
}

# Site units: power in kW, state of charge as a fraction, time in seconds.
UNIT_TO_SITE = {"kW": 1.0, "W": 0.001, "%": 0.01, "fraction": 1.0, "s": 1.0, "count": 1.0}


def decode(point: Point, registers: list[int], sf_exponent: int = 0, base: float = 1.0) -> float:
    """Raw registers of one point to a value in site units; `base` is the site value of the
    point's scale_point (1 without one)."""
    words = registers if point.word_order == "big" else list(reversed(registers))
    raw = struct.unpack(f">{_STRUCT[point.type]}", struct.pack(f">{len(words)}H", *words))[0]
    factor = point.scale * (10.0**sf_exponent) * UNIT_TO_SITE[point.unit] * base
    return float(raw) * factor * point.sign


def encode(point: Point, value: float, sf_exponent: int = 0, base: float = 1.0) -> list[int]:
    """A value in site units to the registers of one point, rounded and range-checked."""
    factor = point.scale * (10.0**sf_exponent) * UNIT_TO_SITE[point.unit] * base
    if factor == 0 or not math.isfinite(factor):
        # A share of a 0 W rating (or of an unreadable one) cannot express any power.
        raise ValueError(f"{value} cannot be written as a share of {base}")
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


def site_range(point: Point, sf_exponent: int = 0, base: float = 1.0) -> tuple[float, float]:
    """The lowest and highest value in site units the point's registers can express (f32:
    the float's range), as encode() takes them."""
    factor = point.scale * (10.0**sf_exponent) * UNIT_TO_SITE[point.unit] * base * point.sign
    if point.type is DataType.F32:
        largest = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]
        lo_raw, hi_raw = -largest, largest
    else:
        lo_raw, hi_raw = _int_range(point.type)
    ends = (lo_raw * factor, hi_raw * factor)
    return min(ends) + 0.0, max(ends) + 0.0  # + 0.0: no -0 in a message
