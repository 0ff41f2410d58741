"""Turn inbound D3A balancing trades and spot trades into commitments, or say why not.

Each function checks everything before deciding, so a rejected message changes nothing.
Reasons name the field or object at fault; they go verbatim into the ack.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from flexedge.controller.core.admission import (
    EPS_KWH,
    AssetState,
    Ledger,
    accept_what_fits,
    format_kwh,
)
from flexedge.controller.core.capability import capability, committed_on
from flexedge.controller.core.merit import merit_order
from flexedge.controller.core.model import AckStatus, Admission, Offer, RefType
from flexedge.controller.core.residuals import energy_left, named, residual_problem, root_offer

# The ack of a spot trade recorded while the balancing market is off.
SPOT_ONLY = (
    "recorded; the balancing market is disabled for this site (enable_balancing_market is "
    "false), so no balancing offer follows"
)


@dataclass(frozen=True, slots=True)
class TradeRequest:
    id: str
    offer_id: str
    asset: str
    slot_start: float
    energy_kwh: float
    price_ct: float
    # gsy-e: the new id the market gave the rest of the offer it did not take.
    residual_offer_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpotTrade:
    """A D3A spot-market trade of one of our assets (what it bought or sold in a slot)."""

    id: str
    asset: str
    slot_start: float
    energy_kwh: float
    side: Literal["buy", "sell"]
    rate_ct_per_kwh: float


def _d3a_problem(
    market_enabled: bool, registry: Mapping[str, tuple[float, float]], asset: str
) -> str | None:
    """Why a D3A message about `asset` cannot be taken at all, if it cannot."""
    if not market_enabled:
        return "balancing market is disabled for this site (enable_balancing_market is false)"
    if asset not in registry:
        return f"asset {asset!r} is not in the asset registry"
    return None


def _availability_problem(asset: str, state: AssetState | None) -> str | None:
    if state is None or state.headroom is None:
        return f"asset {asset!r} is unavailable (no fresh telemetry)"
    return None


def admit_trade(
    request: TradeRequest,
    *,
    market_enabled: bool,
    registry: Mapping[str, tuple[float, float]],
    offers: Mapping[str, Offer],
    traded_kwh: Mapping[str, float],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    slot_seconds: float,
    now: float,
    cover_with_other_assets: bool = True,
    residuals: Mapping[str, str] | None = None,
) -> Admission:
    """A D3A balancing trade against one of our offers, delivered over the rest of its slot.

    The offer is named by its own id or by a residual id a partial trade announced
    (`residuals`: residual id -> offer id, see flexedge.controller.core.residuals); what is
    left of it is counted once (`traded_kwh` by offer id).

    The offer's asset carries it; with `cover_with_other_assets`, the site's other registered
    assets back it up in merit order (see `merit_order`).
    """
    residuals = residuals or {}
    problem = _d3a_problem(market_enabled, registry, request.asset)
    if problem:
        return Admission.reject(problem)
    offer = root_offer(request.offer_id, offers, residuals)
    if offer is None:
        return Admission.reject(f"unknown offer {request.offer_id!r}")
    what = named(request.offer_id, offer)
    if offer.asset != request.asset:
        return Admission.reject(f"{what} is for asset {offer.asset!r}, not {request.asset!r}")
    if abs(offer.slot_start - request.slot_start) > 1e-3:
        return Admission.reject(f"slot_start does not match {what}'s slot")
    if request.energy_kwh * offer.energy_kwh <= 0:
        return Admission.reject(
            f"energy_kwh {request.energy_kwh:+.4f} must have the sign of {what} "
            f"({offer.energy_kwh:+.4f}) and not be 0"
        )
    left = energy_left(offer, traded_kwh)
    # The tolerance is on the total, not on what is left: trades just within it one after
    # another must not add up to more than the offer.
    taken = abs(traded_kwh.get(offer.id, 0.0)) + abs(request.energy_kwh)
    if taken > abs(offer.energy_kwh) + EPS_KWH:
        return Admission.reject(
            f"energy_kwh {format_kwh(abs(request.energy_kwh))} exceeds what is left of {what} "
            f"({format_kwh(left)} of {format_kwh(abs(offer.energy_kwh))})"
        )
    if request.residual_offer_id is not None:
        problem = residual_problem(request.residual_offer_id, offer, offers, residuals)
        if problem:
            return Admission.reject(problem)
    expected_price = offer.rate_ct_per_kwh * abs(request.energy_kwh)
    if abs(request.price_ct - expected_price) > max(0.01, 0.001 * expected_price):
        return Admission.reject(
            f"price_ct {request.price_ct:.4f} is not the offer rate "
            f"{offer.rate_ct_per_kwh} ct/kWh x {format_kwh(abs(request.energy_kwh))} "
            f"= {expected_price:.4f} (pay-as-offer)"
        )
    window_end = offer.slot_start + slot_seconds
    if window_end <= now:
        return Admission.reject("the slot of this trade is already over")
    problem = _availability_problem(request.asset, assets.get(request.asset))
    if problem:
        return Admission.reject(problem)
    headroom = assets[request.asset].headroom
    assert headroom is not None
    window_start = max(now, offer.slot_start)
    direction = 1 if request.energy_kwh > 0 else -1
    can_do = capability(
        headroom,
        direction,
        window_start,
        window_end,
        committed_on(request.asset, ledger.commitments, ledger.progress, now),
        assets[request.asset].ready_at(direction, now),
    )
    backups = (
        merit_order(registry, {a: st.kind for a, st in assets.items()}, direction, request.asset)
        if cover_with_other_assets
        else ()
    )
    return accept_what_fits(
        ref=request.id,
        ref_type=RefType.BALANCING_TRADE,
        requested=request.energy_kwh,
        capability_by_asset={request.asset: can_do},
        bound=None,
        window=(window_start, window_end),
        settlement=lambda accepted: offer.rate_ct_per_kwh * abs(accepted),
        backups=backups,
    )


def admit_spot_trade(
    request: SpotTrade,
    *,
    market_enabled: bool,
    registry: Mapping[str, tuple[float, float]],
    slot_seconds: float,
    now: float,
    devices: Collection[str] = (),
) -> Admission:
    """A spot trade is recorded (it may lead to new offers); it never is a commitment.

    Spot trading does not depend on the balancing market: with it disabled the trade of any
    asset of the site (`devices`) is still recorded, and only the offers it would lead to
    are not made."""
    if not market_enabled:
        if request.asset not in devices:
            return Admission.reject(f"asset {request.asset!r} is not a device of this site")
    elif request.asset not in registry:
        return Admission.reject(f"asset {request.asset!r} is not in the asset registry")
    if request.slot_start + slot_seconds <= now:
        return Admission.reject("the slot of this spot trade is already over")
    if not market_enabled:
        return Admission(AckStatus.ACCEPTED, SPOT_ONLY)
    return Admission(AckStatus.ACCEPTED, "")
