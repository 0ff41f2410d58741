"""Turn inbound Power TAC control events into commitments against a tariff's standing order,
or say why not; and the standing order to publish for what the assets can really do.

Each function checks everything before deciding, so a rejected message changes nothing.
Reasons name the field or object at fault; they go verbatim into the ack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flexedge.controller.core.admission import (
    EPS_KWH,
    AssetState,
    Ledger,
    accept_what_fits,
    capabilities_in_window,
    format_kwh,
)
from flexedge.controller.core.merit import AssetKind
from flexedge.controller.core.model import AckStatus, Admission, RefType
from flexedge.controller.core.orders import (
    OrderPair,
    StandingOrder,
    economic_curtailment_kwh,
    order_for_event,
)

__all__ = ["StandingOrder"]  # its home is core.orders; kept importable from here


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
    orders: Mapping[str, OrderPair],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    slot_seconds: float,
    now: float,
) -> Admission:
    """A Power TAC balancing control event exercising one of a tariff's standing orders: the
    up order bounds kwh > 0, the down order kwh < 0."""
    pair = orders.get(request.tariff_id)
    if pair is None:
        return Admission.reject(f"unknown tariff {request.tariff_id!r}")
    if abs(request.kwh) < EPS_KWH:
        return Admission.reject(f"kwh must not be 0: at least {EPS_KWH} kWh either way")
    window_end = request.timeslot_start + slot_seconds
    if window_end <= now:
        return Admission.reject("the timeslot of this control event is already over")
    order, problem = order_for_event(pair, request.tariff_id, request.kwh)
    if order is None:
        return Admission.reject(problem or "no order")
    direction = 1 if request.kwh > 0 else -1
    window_start = max(now, request.timeslot_start)
    can_do = capabilities_in_window(
        order.assets, assets, direction, (window_start, window_end), ledger, now
    )
    if not can_do:
        return Admission.reject(
            f"no asset of tariff {order.tariff_id!r} is available (no fresh telemetry): "
            f"{', '.join(order.assets)}"
        )
    bound = order_bound_by_asset(order, direction, can_do, {a: s.kind for a, s in assets.items()})
    return accept_what_fits(
        ref=request.id,
        ref_type=RefType.BALANCING_CONTROL,
        requested=request.kwh,
        capability_by_asset=bound,
        bound=f"the bound of tariff {order.tariff_id!r}'s {order.direction} order "
        f"(exercise_ratio {order.exercise_ratio})",
        window=(window_start, window_end),
        settlement=lambda accepted: request.payment * abs(accepted) / abs(request.kwh),
    )


def admit_economic_control(
    request: EconomicControl,
    *,
    tariffs: Mapping[str, Sequence[str]],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    slot_seconds: float,
    now: float,
) -> Admission:
    """A Power TAC economic control event: curtail each curtailable load of the tariff by
    min(ratio, its curtailable share) x its usage over the rest of the timeslot, unpaid.

    It comes before balancing, as in Power TAC, whichever arrives first: it is sized without
    regard to balancing commitments (only other economic controls count) and dispatch serves
    it first; balancing control events admitted after it see what it leaves
    (`balancing_room_kwh`), and those admitted before it get what it leaves in dispatch (the
    ack's reason names them). A control for a later timeslot is a commitment whose window
    starts then: it is held until that timeslot.
    """
    names = tariffs.get(request.tariff_id)
    if names is None:
        return Admission.reject(f"unknown tariff {request.tariff_id!r}")
    window_end = request.timeslot_start + slot_seconds
    if window_end <= now:
        return Admission.reject("the timeslot of this economic control is already over")
    if request.curtailment_ratio == 0:
        return Admission(AckStatus.ACCEPTED, "curtailment_ratio 0: nothing to curtail")
    loads = [a for a in names if (s := assets.get(a)) and s.kind == "flexible_load"]
    if not loads:
        return Admission.reject(f"tariff {request.tariff_id!r} has no curtailable loads")
    window_start = max(now, request.timeslot_start)
    hours = (window_end - window_start) / 3600.0
    economic_only = Ledger(
        [c for c in ledger.commitments if c.ref_type is RefType.ECONOMIC_CONTROL],
        ledger.progress,
    )
    curtail: dict[str, float] = {}
    for asset, room in capabilities_in_window(
        loads, assets, +1, (window_start, window_end), economic_only, now
    ).items():
        state = assets[asset]
        assert state.headroom is not None  # _capabilities keeps available assets only
        usage_kwh = (state.usage_kw or 0.0) * hours
        share = state.headroom.up_kw / state.usage_kw if state.usage_kw else 0.0
        wanted = economic_curtailment_kwh(request.curtailment_ratio, share, usage_kwh)
        curtail[asset] = min(wanted, room)
    if not curtail:
        return Admission.reject(
            f"no load of tariff {request.tariff_id!r} is available (no fresh telemetry): "
            f"{', '.join(loads)}"
        )
    energy = sum(curtail.values())
    admission = accept_what_fits(
        ref=request.id,
        ref_type=RefType.ECONOMIC_CONTROL,
        requested=energy,
        capability_by_asset=curtail,
        bound=None,
        window=(window_start, window_end),
        settlement=lambda accepted: 0.0,
    )
    precedence = precedence_reason(curtail, assets, ledger, (window_start, window_end), now)
    if admission.commitment is None or precedence is None:
        return admission
    reason = "; ".join(r for r in (admission.reason, precedence) if r)
    return Admission(admission.status, reason, admission.commitment)


# How an economic control's ack says it is served before balancing commitments it overlaps.
PRECEDENCE = "economic control takes precedence over the balancing commitments of its timeslot"


def precedence_reason(
    curtail: Mapping[str, float],
    assets: Mapping[str, AssetState],
    ledger: Ledger,
    window: tuple[float, float],
    now: float,
) -> str | None:
    """What an economic control takes from balancing commitments admitted before it, if any.

    It is served first (dispatch's `SERVED_FIRST`), so where it and the open balancing
    commitments on a load ask more than the load can shed, those get only what it leaves
    and may end partial: the economic control of their timeslot took precedence.
    """
    parts: list[str] = []
    for asset, kwh in sorted(curtail.items()):
        room = capabilities_in_window([asset], assets, +1, window, ledger, now).get(asset, 0.0)
        if kwh - room <= EPS_KWH:
            continue
        displaced = sorted(
            c.id
            for c in ledger.commitments
            if c.ref_type is not RefType.ECONOMIC_CONTROL
            and asset in c.assets
            and c.accepted_kwh > 0
            and c.window_start < window[1]
            and window[0] < c.window_end
        )
        if displaced:
            parts.append(
                f"{format_kwh(kwh - room)} on {asset} is taken from {', '.join(displaced)}"
            )
    if not parts:
        return None
    return f"{PRECEDENCE} ({'; '.join(parts)}), which may end partial"


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
