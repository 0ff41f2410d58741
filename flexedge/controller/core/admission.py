"""Turn inbound balancing trades and control events into commitments, or say why not.

Each function checks everything before deciding, so a rejected message changes nothing.
Reasons name the field or object at fault; they go verbatim into the ack.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from flexedge.controller.core.capability import Headroom, capability, committed_on
from flexedge.controller.core.merit import AssetKind, merit_order
from flexedge.controller.core.model import (
    AckStatus,
    Admission,
    BatteryLimits,
    Commitment,
    Offer,
    Progress,
    RefType,
)
from flexedge.controller.core.residuals import energy_left, named, residual_problem, root_offer

# The ack of a spot trade recorded while the balancing market is off.
SPOT_ONLY = (
    "recorded; the balancing market is disabled for this site (enable_balancing_market is "
    "false), so no balancing offer follows"
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


@dataclass(frozen=True, slots=True)
class ControlRequest:
    id: str
    tariff_id: str
    timeslot_start: float
    kwh: float
    payment: float


@dataclass(frozen=True, slots=True)
class EconomicControl:
    id: str
    tariff_id: str
    timeslot_start: float
    curtailment_ratio: float


@dataclass(frozen=True, slots=True)
class StandingOrder:
    tariff_id: str
    assets: tuple[str, ...]
    exercise_ratio: float
    price_per_kwh: float


@dataclass(frozen=True, slots=True)
class Ledger:
    """The open commitments and their progress, which bound what new ones may take."""

    commitments: Sequence[Commitment]
    progress: Mapping[str, Progress]


def _fmt(kwh: float) -> str:
    return f"{kwh:.4f} kWh"


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
            f"energy_kwh {_fmt(abs(request.energy_kwh))} exceeds what is left of {what} "
            f"({_fmt(left)} of {_fmt(abs(offer.energy_kwh))})"
        )
    if request.residual_offer_id is not None:
        problem = residual_problem(request.residual_offer_id, offer, offers, residuals)
        if problem:
            return Admission.reject(problem)
    expected_price = offer.rate_ct_per_kwh * abs(request.energy_kwh)
    if abs(request.price_ct - expected_price) > max(0.01, 0.001 * expected_price):
        return Admission.reject(
            f"price_ct {request.price_ct:.4f} is not the offer rate "
            f"{offer.rate_ct_per_kwh} ct/kWh x {_fmt(abs(request.energy_kwh))} "
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
    )
    backups = (
        merit_order(registry, {a: st.kind for a, st in assets.items()}, direction, request.asset)
        if cover_with_other_assets
        else ()
    )
    return _commit(
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


def order_bound_by_asset(
    order: StandingOrder,
    direction: int,
    capability_by_asset: Mapping[str, float],
    kinds: Mapping[str, AssetKind],
) -> dict[str, float]:
    """The part of each asset's capability that the order's exerciseRatio puts on offer.

    Power TAC: 0 < r <= 1 offers r of curtailable load; 1 < r <= 2 all curtailable load and
    (r - 1) of storage discharge; -1 <= r < 0 offers |r| of charge (or thermal dump)
    capability. Loads here can only be curtailed, so they count for up-regulation only;
    generators are not Power TAC customers and count for nothing.
    """
    ratio = order.exercise_ratio
    bound: dict[str, float] = {}
    for asset in order.assets:
        kind = kinds.get(asset)
        if direction > 0 and kind == "flexible_load":
            share = min(ratio, 1.0) if ratio > 0 else 0.0
        elif direction > 0 and kind == "battery":
            share = max(0.0, ratio - 1.0)
        elif direction < 0 and kind == "battery":
            share = -ratio if ratio < 0 else 0.0
        else:
            share = 0.0
        bound[asset] = share * capability_by_asset.get(asset, 0.0)
    return bound


def admit_control(
    request: ControlRequest,
    *,
    orders: Mapping[str, StandingOrder],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    slot_seconds: float,
    now: float,
) -> Admission:
    """A Power TAC balancing control event exercising a tariff's standing order."""
    order = orders.get(request.tariff_id)
    if order is None:
        return Admission.reject(f"unknown tariff {request.tariff_id!r}")
    if abs(request.kwh) < EPS_KWH:
        return Admission.reject("kwh must not be 0")
    window_end = request.timeslot_start + slot_seconds
    if window_end <= now:
        return Admission.reject("the timeslot of this control event is already over")
    direction = 1 if request.kwh > 0 else -1
    if direction * order.exercise_ratio < 0:
        kind = "down" if order.exercise_ratio < 0 else "up"
        return Admission.reject(
            f"the standing order of tariff {order.tariff_id!r} offers only {kind}-regulation "
            f"(exercise_ratio {order.exercise_ratio})"
        )
    window_start = max(now, request.timeslot_start)
    can_do = _capabilities(order.assets, assets, direction, (window_start, window_end), ledger, now)
    if not can_do:
        return Admission.reject(
            f"no asset of tariff {order.tariff_id!r} is available (no fresh telemetry): "
            f"{', '.join(order.assets)}"
        )
    bound = order_bound_by_asset(order, direction, can_do, {a: s.kind for a, s in assets.items()})
    return _commit(
        ref=request.id,
        ref_type=RefType.BALANCING_CONTROL,
        requested=request.kwh,
        capability_by_asset=bound,
        bound=f"the bound of tariff {order.tariff_id!r}'s order "
        f"(exercise_ratio {order.exercise_ratio})",
        window=(window_start, window_end),
        settlement=lambda accepted: request.payment * abs(accepted) / abs(request.kwh),
    )


def _capabilities(
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
            )
    return result


def _commit(
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
        return Admission.reject(f"nothing of {_fmt(abs(requested))} fits {what} in the window")
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
            f"accepted {_fmt(abs(accepted))}; {_fmt(beyond)} is beyond {what}",
            commitment,
        )
    return Admission(AckStatus.ACCEPTED, "", commitment)


def admit_economic_control(
    request: EconomicControl,
    *,
    orders: Mapping[str, StandingOrder],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    slot_seconds: float,
    now: float,
) -> Admission:
    """A Power TAC economic control event: curtail the tariff's curtailable loads by the
    ratio for the rest of the timeslot, unpaid. It becomes a commitment like any other, so it
    is dispatched, metered and reported, and it uses up the capacity balancing orders see."""
    order = orders.get(request.tariff_id)
    if order is None:
        return Admission.reject(f"unknown tariff {request.tariff_id!r}")
    window_end = request.timeslot_start + slot_seconds
    if window_end <= now:
        return Admission.reject("the timeslot of this economic control is already over")
    if request.curtailment_ratio == 0:
        return Admission(AckStatus.ACCEPTED, "curtailment_ratio 0: nothing to curtail")
    loads = [a for a in order.assets if (s := assets.get(a)) and s.kind == "flexible_load"]
    if not loads:
        return Admission.reject(f"tariff {order.tariff_id!r} has no curtailable loads")
    window_start = max(now, request.timeslot_start)
    curtail = {
        asset: request.curtailment_ratio * kwh
        for asset, kwh in _capabilities(
            loads, assets, +1, (window_start, window_end), ledger, now
        ).items()
    }
    if not curtail:
        return Admission.reject(
            f"no load of tariff {order.tariff_id!r} is available (no fresh telemetry): "
            f"{', '.join(loads)}"
        )
    energy = sum(curtail.values())
    return _commit(
        ref=request.id,
        ref_type=RefType.ECONOMIC_CONTROL,
        requested=energy,
        capability_by_asset=curtail,
        bound=None,
        window=(window_start, window_end),
        settlement=lambda accepted: 0.0,
    )


def live_order(policy: StandingOrder, assets: Mapping[str, AssetState]) -> StandingOrder | None:
    """The standing order to publish now: the configured one, cut to the kinds of capability
    the tariff's available assets really have. An up order above 1 offers storage discharge
    on top of curtailment, so without an available battery it drops to 1; without available
    curtailable loads or batteries there is nothing to offer (None: keep the last order)."""

    def has(kind: AssetKind, up: bool) -> bool:
        for asset in policy.assets:
            state = assets.get(asset)
            if state is None or state.kind != kind or state.headroom is None:
                continue
            if (state.headroom.up_kw if up else state.headroom.down_kw) > 0:
                return True
        return False

    ratio = policy.exercise_ratio
    if ratio < 0:
        effective: float | None = ratio if has("battery", up=False) else None
    elif ratio <= 1:
        effective = ratio if has("flexible_load", up=True) else None
    elif has("battery", up=True):
        effective = ratio
    else:
        effective = 1.0 if has("flexible_load", up=True) else None
    if effective is None:
        return None
    return StandingOrder(policy.tariff_id, policy.assets, effective, policy.price_per_kwh)
