"""What admitting an inbound message into a commitment shares, whatever market it comes from:
the live state of the assets, the open commitments that bound new ones, and accepting what the
assets can do. D3A trades are admitted in `trade_admission`, Power TAC control events in
`control_admission`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flexedge.controller.core.capability import Headroom, capability, committed_on
from flexedge.controller.core.dispatch import AT_ONCE, ResponseFigures
from flexedge.controller.core.merit import AssetKind
from flexedge.controller.core.model import (
    AckStatus,
    Admission,
    BatteryLimits,
    Commitment,
    Progress,
    RefType,
)

# Energies closer than this are the same (0.1 Wh): floats from JSON need a little slack.
EPS_KWH = 1e-4


@dataclass(frozen=True, slots=True)
class AssetState:
    """The live view of one asset the core needs to decide: its kind, what it can still give
    each way, and whether it can be counted on. Batteries also carry limits and SoC, which
    offer sizing uses."""

    kind: AssetKind
    headroom: Headroom | None  # None: unavailable
    limits: BatteryLimits | None = None
    soc: float | None = None
    # Loads: what the load draws uncurtailed now, kW (>= 0); Power TAC's "usage".
    usage_kw: float | None = None
    # How it follows a setpoint (the site file's `response`): a window that starts now
    # gets its full power only after its lead.
    response: ResponseFigures = AT_ONCE

    def ready_at(self, direction: int, now: float) -> float:
        """When a change to full power in `direction`, told now, has in effect arrived: now
        plus its delay and half its ramp's time (a step then gives what the ramp gave)."""
        if self.headroom is None:
            return now
        full_kw = self.headroom.up_kw if direction > 0 else self.headroom.down_kw
        return now + self.response.lead_s(full_kw)


@dataclass(frozen=True, slots=True)
class Ledger:
    """The open commitments and their progress, which bound what new ones may take."""

    commitments: Sequence[Commitment]
    progress: Mapping[str, Progress]


def format_kwh(kwh: float) -> str:
    return f"{kwh:.4f} kWh"


def capabilities_in_window(
    names: Sequence[str],
    assets: Mapping[str, AssetState],
    direction: int,
    window: tuple[float, float],
    ledger: Ledger,
    now: float,
) -> dict[str, float]:
    """kWh each available asset can still give in `direction` in the window."""
    result: dict[str, float] = {}
    for name in names:
        state = assets.get(name)
        if state is not None and state.headroom is not None:
            result[name] = capability(
                state.headroom,
                direction,
                window[0],
                window[1],
                committed_on(name, ledger.commitments, ledger.progress, now),
                state.ready_at(direction, now),
            )
    return result


def accept_what_fits(
    *,
    ref: str,
    ref_type: RefType,
    requested: float,
    capability_by_asset: Mapping[str, float],
    bound: str | None,
    window: tuple[float, float],
    settlement: Callable[[float], float],
    backups: tuple[str, ...] = (),
) -> Admission:
    """Accept what the assets can do, spread in proportion to each asset's capacity."""
    total = sum(capability_by_asset.values())
    if total < EPS_KWH:
        what = bound or "the asset's power and SoC limits"
        return Admission.reject(
            f"nothing of {format_kwh(abs(requested))} fits {what} in the window"
        )
    direction = 1.0 if requested > 0 else -1.0
    accepted = direction * min(abs(requested), total)
    shares = tuple(
        (asset, cap / total) for asset, cap in sorted(capability_by_asset.items()) if cap > 0
    )
    commitment = Commitment(
        id=f"cm-{ref}",
        ref=ref,
        ref_type=ref_type,
        window_start=window[0],
        window_end=window[1],
        requested_kwh=requested,
        accepted_kwh=round(accepted, 6),
        shares=shares,
        settlement=round(settlement(accepted), 6),
        backups=backups,
    )
    beyond = abs(requested) - abs(accepted)
    if beyond > EPS_KWH:
        what = bound or "the asset's power and SoC limits in the time left"
        return Admission(
            AckStatus.CLIPPED,
            f"accepted {format_kwh(abs(accepted))}; {format_kwh(beyond)} is beyond {what}",
            commitment,
        )
    return Admission(AckStatus.ACCEPTED, "", commitment)
