"""Ratings against register ranges: a Modbus device's ratings must fit the registers its map
gives them, or the first setpoint near a rating fails in the driver (a 500 kW battery on an
s16 x 0.01 kW register, which stops at 327.67 kW).

Each power point a controller reads or writes is checked against the values the site file lets
the device reach there, in site units, with the map's type, scale, unit and sign.

Points with a SunSpec scale-factor point are not checked here: their range is set by the
exponent the device itself publishes in that register, read at run time, and a device picks it
to fit its own rating. Points with a `scale_point` (a percentage of another point) are checked
as the share of that point's rating they must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexedge.config.device_kinds import Battery, FlexibleLoad, Generator
from flexedge.config.register_codec import encode, site_range
from flexedge.config.registermap import LoadedMap, Point
from flexedge.config.schema import Device


@dataclass(frozen=True)
class Reach:
    """A value (site units) the device may show or be sent in a point, and the site-file
    field it comes from."""

    point: str
    value: float
    field: str


def _reaches(device: Device) -> list[Reach]:
    if isinstance(device, Battery):
        return [
            Reach("power", device.max_discharge_kw, "max_discharge_kw"),
            Reach("power", -device.max_charge_kw, "max_charge_kw"),
            Reach("power_setpoint", device.max_discharge_kw, "max_discharge_kw"),
            Reach("power_setpoint", -device.max_charge_kw, "max_charge_kw"),
            Reach("max_charge_power", device.max_charge_kw, "max_charge_kw"),
            Reach("max_discharge_power", device.max_discharge_kw, "max_discharge_kw"),
        ]
    if isinstance(device, FlexibleLoad):
        peak = max(kw for _, kw in device.baseline_profile)
        # Consumption is negative in the site convention; a limit is a positive cap.
        reaches = [
            Reach("power", -device.max_kw, "max_kw"),
            Reach("power", -peak, "baseline_profile"),
            Reach("power_limit", device.max_kw, "max_kw"),
            Reach("power_setpoint", -device.max_kw, "max_kw"),
        ]
        if device.max_extra_kw > 0:
            reaches.append(Reach("power_setpoint", -(peak + device.max_extra_kw), "max_extra_kw"))
        return reaches
    if isinstance(device, Generator):
        return [
            Reach("power", device.max_kw, "max_kw"),
            Reach("power_setpoint", device.max_kw, "max_kw"),
        ]
    return []


def _rating_of(device: Device, point: str) -> float | None:
    """The site value a percentage point is a share of, at its largest."""
    for reach in _reaches(device):
        if reach.point == point:
            return abs(reach.value)
    return None


def _fits(point: Point, value: float, base: float) -> bool:
    try:
        encode(point, value, 0, base)
    except ValueError:
        return False
    return True


def rating_problems(index: int, device: Device, loaded: LoadedMap) -> list[tuple[str, str]]:
    """Every rating of a Modbus device its map's registers cannot express, as (field path,
    problem); MQTT devices have no registers."""
    if device.transport == "mqtt":
        return []
    problems: list[tuple[str, str]] = []
    for reach in _reaches(device):
        point = loaded.spec.points.get(reach.point)
        if point is None or point.scale_factor_point is not None:
            continue
        base = 1.0
        if point.scale_point is not None:
            rating = _rating_of(device, point.scale_point)
            if rating is None:
                continue  # a share of something no rating bounds: nothing to check here
            base = rating
        if _fits(point, reach.value, base):
            continue
        low, high = site_range(point, 0, base)
        field = f"devices[{index}] ({device.name}).{reach.field}"
        problem = (
            f"{reach.value:g} kW does not fit point {reach.point!r} of map {loaded.source} "
            f"({point.type} x {point.scale:g} {point.unit}: {low:g} to {high:g} kW); "
            "use a map with a wider register or a lower rating"
        )
        if (field, problem) not in problems:
            problems.append((field, problem))
    return problems
