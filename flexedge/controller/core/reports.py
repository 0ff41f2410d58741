"""Delivery reports: what was asked, what was accepted, what the meter says was delivered."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from flexedge.controller.core.model import Commitment, Progress, RefType

# Below this share of the accepted energy a delivery counts as failed rather than partial.
FAILED_BELOW = 0.1


@dataclass(frozen=True, slots=True)
class AssetDelivery:
    asset: str
    baseline_kw: float
    delivered_kwh: float


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    commitment_id: str
    ref: str
    ref_type: str
    window_start: float
    window_end: float
    requested_kwh: float
    accepted_kwh: float
    delivered_kwh: float
    status: str
    coverage: float
    settlement: float
    assets: tuple[AssetDelivery, ...]
    reason: str = ""  # why it ended before its window did; empty when it did not


def delivery_status(accepted_kwh: float, delivered_kwh: float, tolerance: float) -> str:
    """delivered within `tolerance` of the accepted energy (or more), failed below 10 %."""
    ratio = delivered_kwh / accepted_kwh if accepted_kwh else 0.0
    if ratio >= 1.0 - tolerance:
        return "delivered"
    if ratio < FAILED_BELOW:
        return "failed"
    return "partial"


def coverage(commitment: Commitment, progress: Progress) -> float:
    """Share of the window (weighted over the commitment's assets) backed by telemetry."""
    duration = commitment.window_end - commitment.window_start
    if duration <= 0:
        return 0.0
    covered = sum(
        share * progress.covered_s_by_asset.get(asset, 0.0) for asset, share in commitment.shares
    )
    return min(1.0, covered / duration)


def reported_assets(
    share_assets: Sequence[str], backups: Sequence[str], delivered_by: Mapping[str, float]
) -> tuple[str, ...]:
    """The assets a commitment's report lists: its share assets, then the backups that
    delivered part of it."""
    return (*share_assets, *(b for b in backups if b in delivered_by))


def build_report(
    commitment: Commitment,
    progress: Progress,
    baselines_kw: dict[str, float],
    tolerance: float,
    ended_early: str = "",
) -> DeliveryReport:
    """The report for a commitment whose window is over, or that ended before it did for
    the reason `ended_early` (it is measured against all it accepted).

    Settlement is pay-as-delivered capped at the accepted energy: the market pays its price
    for what was delivered, never for more than it bought. The per-asset breakdown lists the
    share assets, then the backups that covered for them.
    """
    delivered = progress.delivered_kwh
    paid_share = 0.0
    if commitment.accepted_kwh:
        paid_share = min(1.0, max(0.0, delivered / commitment.accepted_kwh))
    return DeliveryReport(
        commitment_id=commitment.id,
        ref=commitment.ref,
        ref_type=commitment.ref_type.value,
        window_start=commitment.window_start,
        window_end=commitment.window_end,
        requested_kwh=commitment.requested_kwh,
        accepted_kwh=commitment.accepted_kwh,
        delivered_kwh=round(delivered, 6),
        status=delivery_status(commitment.accepted_kwh, delivered, tolerance),
        coverage=round(coverage(commitment, progress), 4),
        settlement=round(commitment.settlement * paid_share, 6),
        assets=tuple(
            AssetDelivery(
                asset, baselines_kw.get(asset, 0.0), round(progress.by_asset.get(asset, 0.0), 6)
            )
            for asset in reported_assets(commitment.assets, commitment.backups, progress.by_asset)
        ),
        reason=ended_early,
    )


def served_first_over(
    commitment: Commitment, status: str, others: Iterable[Commitment]
) -> tuple[str, ...]:
    """The economic controls served before a commitment that fell short (partial or failed):
    open on one of its assets in an overlapping window. Dispatch serves economic control
    first, so these are why the commitment got less; empty when it was delivered or none."""
    if status == "delivered" or commitment.ref_type is RefType.ECONOMIC_CONTROL:
        return ()
    return tuple(
        sorted(
            other.id
            for other in others
            if other.ref_type is RefType.ECONOMIC_CONTROL
            and set(other.assets) & set(commitment.assets)
            and other.window_start < commitment.window_end
            and commitment.window_start < other.window_end
        )
    )
