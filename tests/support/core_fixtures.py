"""Plain-data builders shared by the core tests."""

from __future__ import annotations

from flexedge.controller.core.model import BatteryLimits, Commitment, RefType

T0 = 1_800_000_000.0  # an arbitrary UTC instant, whole slot boundary for 30/60/900 s slots


def battery(asset: str = "b1", **overrides: float) -> BatteryLimits:
    values: dict[str, float] = dict(
        capacity_kwh=10.0,
        soc_floor=0.15,
        soc_ceiling=0.95,
        max_charge_kw=5.0,
        max_discharge_kw=5.0,
        charge_efficiency=0.95,
        discharge_efficiency=0.95,
    )
    values.update(overrides)
    return BatteryLimits(asset=asset, **values)


def commitment(
    cid: str = "c1",
    kwh: float = 0.02,
    start: float = T0,
    end: float = T0 + 30,
    shares: tuple[tuple[str, float], ...] = (("b1", 1.0),),
    backups: tuple[str, ...] = (),
) -> Commitment:
    return Commitment(
        id=cid,
        ref=cid,
        ref_type=RefType.BALANCING_CONTROL,
        window_start=start,
        window_end=end,
        requested_kwh=kwh,
        accepted_kwh=kwh,
        shares=shares,
        backups=backups,
    )
