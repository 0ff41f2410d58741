"""How much regulation an asset can still give in a window, after what is already committed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flexedge.controller.core.model import BatteryLimits, Commitment, Progress


@dataclass(frozen=True, slots=True)
class Committed:
    """What other commitments still need from one asset (all values >= 0)."""

    up_kw: float = 0.0
    down_kw: float = 0.0
    up_kwh: float = 0.0
    down_kwh: float = 0.0


def remaining_kwh(commitment: Commitment, progress: Progress | None) -> float:
    """Energy still owed, signed like the commitment; 0 once it is met or overshot."""
    delivered = progress.delivered_kwh if progress else 0.0
    left = commitment.accepted_kwh - delivered
    return left if left * commitment.accepted_kwh > 0 else 0.0


def committed_on(
    asset: str,
    commitments: Iterable[Commitment],
    progress: Mapping[str, Progress],
    now: float,
) -> Committed:
    """Sum of the energy and average power that open commitments still ask of `asset`."""
    up_kw = down_kw = up_kwh = down_kwh = 0.0
    for commitment in commitments:
        if commitment.window_end <= now:
            continue
        share = next((s for a, s in commitment.shares if a == asset), 0.0)
        if share == 0.0:
            continue
        energy = remaining_kwh(commitment, progress.get(commitment.id)) * share
        hours = (commitment.window_end - max(now, commitment.window_start)) / 3600.0
        power = energy / hours if hours > 0 else 0.0
        if energy > 0:
            up_kwh += energy
            up_kw += power
        else:
            down_kwh -= energy
            down_kw -= power
    return Committed(up_kw, down_kw, up_kwh, down_kwh)


@dataclass(frozen=True, slots=True)
class Headroom:
    """What an asset can give each way from now on, before other commitments (all >= 0).

    Power bounds every kind; energy bounds storage (SoC) and is unbounded otherwise.
    """

    up_kw: float
    down_kw: float
    up_kwh: float = math.inf
    down_kwh: float = math.inf

    @staticmethod
    def of_battery(limits: BatteryLimits, soc: float) -> Headroom:
        return Headroom(
            limits.max_discharge_kw,
            limits.max_charge_kw,
            limits.dischargeable_kwh(soc),
            limits.chargeable_kwh(soc),
        )


def capability(
    headroom: Headroom,
    direction: int,
    window_start: float,
    window_end: float,
    committed: Committed,
    ready_at: float = -math.inf,
) -> float:
    """kWh (>= 0) the asset can still deliver in `direction` (+1 up, -1 down) in the window,
    from `ready_at` on if that is later than its start (a device that takes time to respond
    to a window that starts now)."""
    hours = max(0.0, window_end - max(window_start, ready_at)) / 3600.0
    if direction > 0:
        by_power = (headroom.up_kw - committed.up_kw) * hours
        by_energy = headroom.up_kwh - committed.up_kwh
    else:
        by_power = (headroom.down_kw - committed.down_kw) * hours
        by_energy = headroom.down_kwh - committed.down_kwh
    return max(0.0, min(by_power, by_energy))
