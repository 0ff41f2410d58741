"""The Power TAC distribution utility: exercise standing balancing orders, send economic controls.

A BalancingOrder(tariff, exerciseRatio, price) stays in force until replaced by an order of
its direction; flexedge publishes each tariff's up and down order retained on
market/balancing-order/{tariff}/up and .../down. To cover an imbalance the utility exercises,
as Power TAC's StaticSettlementProcessor does, only the orders on the side of the imbalance
(ratio > 0 up-regulation for a shortage, ratio < 0 down-regulation for a surplus), cheapest
price first (ties in the order they arrived), none priced above the regulating price (the
server's dummy order for the regulating market, at pPlus or pMinus: with its default zero
slope, dearer orders sort after it and are never used), each up to what its tariff can
deliver in the rest of the timeslot, with one balancing control event per order.

How much a tariff can deliver is estimated from the site file (the utility sees no SoC), an
upper bound; when the site clips an event the rest goes to the next order in a new round
(flexedge's own: the server plans once and the site cannot clip).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flexedge.config.schema import Battery, FlexibleLoad, SiteConfig
from flexedge.contract.messages import BalancingControlMsg, EconomicControlMsg, moment
from flexedge.contract.wire import dump
from flexedge.controller.core.kinds import profile_kw
from flexedge.simulators.market.scenario import Imbalance

log = logging.getLogger(__name__)

STEP_KWH = 1e-4  # the site refuses smaller events (0.1 Wh)

# Power TAC's regulating-market prices with the server's default settings (server.properties:
# defaultSpotPrice 75 per MWh, rmPremium 2.0, rmFee 0.035 per kWh), per kWh.
DEFAULT_SPOT_PER_MWH = 75.0
RM_PREMIUM = 2.0
RM_FEE_PER_KWH = 0.035
P_PLUS = DEFAULT_SPOT_PER_MWH * RM_PREMIUM / 1000 + RM_FEE_PER_KWH  # 0.185
P_MINUS = -DEFAULT_SPOT_PER_MWH / RM_PREMIUM / 1000 - RM_FEE_PER_KWH  # -0.0725

PAYMENT_RULE = (
    "each exercised kWh is paid the regulating price (pPlus for a shortage, pMinus for a "
    "surplus, negative: the site pays), unless the scenario sets payment_per_kwh. This is "
    "what Power TAC's VCG payment (StaticSettlementProcessor, p2) comes to for one broker "
    "whose orders compete only with a regulating market of zero price slope; the server's "
    "imbalance charge (p1) and sloped regulating market are not simulated"
)


def regulating_price(imbalance_kwh: float) -> float:
    """The regulating market's price for an imbalance (> 0 shortage): pPlus, or pMinus."""
    return P_PLUS if imbalance_kwh > 0 else P_MINUS


@dataclass(frozen=True, slots=True)
class Order:
    tariff_id: str
    exercise_ratio: float
    price_per_kwh: float

    @property
    def direction(self) -> int:
        return 1 if self.exercise_ratio > 0 else -1

    @property
    def key(self) -> str:
        """The order's place: one per tariff and direction, as on its topic."""
        return f"{self.tariff_id}/{'up' if self.direction > 0 else 'down'}"


@dataclass(frozen=True, slots=True)
class Exercise:
    tariff_id: str
    kwh: float  # signed: > 0 up-regulation
    price_per_kwh: float

    @property
    def payment(self) -> float:
        return round(self.price_per_kwh * abs(self.kwh), 6)


def parse_order(body: Mapping[str, Any]) -> Order | None:
    try:
        return Order(
            str(body["tariff_id"]), float(body["exercise_ratio"]), float(body["price_per_kwh"])
        )
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring malformed balancing order %s", body.get("id"))
        return None


@dataclass(frozen=True, slots=True)
class ImbalanceTerms:
    orders: dict[str, Order]  # the orders on the imbalance's side, by tariff
    regulating_price: float
    payment_per_kwh: float
    summary: str


def imbalance_terms(orders_by_key: Mapping[str, Order], imbalance: Imbalance) -> ImbalanceTerms:
    """What an imbalance (> 0 shortage) may use and pays: the orders on its side (one per
    tariff), the regulating price (default pPlus or pMinus) and the payment per kWh (default
    the regulating price, PAYMENT_RULE)."""
    imbalance_kwh = imbalance.kwh
    regulating_price_per_kwh = imbalance.regulating_price_per_kwh
    payment_per_kwh = imbalance.payment_per_kwh
    side = 1 if imbalance_kwh > 0 else -1
    regulating = (
        regulating_price(imbalance_kwh)
        if regulating_price_per_kwh is None
        else regulating_price_per_kwh
    )
    paid = regulating if payment_per_kwh is None else payment_per_kwh
    summary = (
        f"imbalance {imbalance_kwh:+.4f} kWh"
        + (f" on {imbalance.tariff}" if imbalance.tariff else "")
        + f"; regulating price {regulating:+.4f} per kWh, orders priced above it unused; paid "
        + (
            f"{paid:+.4f} per kWh (the scenario's)"
            if payment_per_kwh is not None
            else "the regulating price per kWh"
        )
    )
    orders = {o.tariff_id: o for o in orders_by_key.values() if o.direction == side}
    return ImbalanceTerms(orders, regulating, paid, summary)


def take_order(orders: dict[str, Order], key: str, payload: bytes) -> str | None:
    """Keep the order published on `{ORDER_PREFIX}{key}` ("{tariff}/{up|down}"): an empty
    retained payload withdraws it. Returns what changed worth saying, if anything."""
    if not payload:
        return f"order withdrawn: {key}" if orders.pop(key, None) else None
    try:
        body = json.loads(payload)
    except ValueError:
        log.warning("ignoring a non-JSON balancing order on %s", key)
        return None
    order = parse_order(body) if isinstance(body, dict) else None
    if order is not None and order.key != key:
        log.warning("ignoring %s order on %s: wrong direction for its topic", order.key, key)
    elif order is not None:
        orders[key] = order
    return None


def _floor(kwh: float) -> float:
    return math.floor(kwh / STEP_KWH + 1e-6) * STEP_KWH


def plan_exercise(
    orders: Iterable[Order],
    imbalance_kwh: float,
    capacity_kwh: Mapping[str, float] | None = None,
    *,
    tariff: str | None = None,
    payment_per_kwh: float | None = None,
    regulating_price: float | None = None,
) -> tuple[list[Exercise], float]:
    """Cover `imbalance_kwh` (> 0 shortage) with the orders on its side, cheapest first and
    none priced above `regulating_price` (None: no such cap).

    `capacity_kwh` bounds each tariff (magnitude; a missing tariff is unbounded). Returns the
    exercises and the signed part nobody can cover (the regulating market's).
    """
    direction = 1 if imbalance_kwh > 0 else -1
    need = abs(imbalance_kwh)
    caps = capacity_kwh or {}
    plan: list[Exercise] = []
    candidates = [
        o
        for o in orders
        if o.direction == direction
        and (tariff is None or o.tariff_id == tariff)
        and (regulating_price is None or o.price_per_kwh <= regulating_price)
    ]
    # A stable sort: orders of one price keep the order they arrived in.
    for order in sorted(candidates, key=lambda o: o.price_per_kwh):
        take = _floor(min(need, caps.get(order.tariff_id, math.inf)))
        if take < STEP_KWH:
            continue
        price = order.price_per_kwh if payment_per_kwh is None else payment_per_kwh
        plan.append(Exercise(order.tariff_id, round(direction * take, 6), price))
        need -= take
    return plan, round(direction * max(0.0, need), 6)


def order_capacity_kwh(site: SiteConfig, order: Order, now: float, window_end: float) -> float:
    """Upper bound of what the order lets the utility take until `window_end`.

    The shares mirror flexedge's reading of Power TAC: curtailable load counts up to
    min(r, 1) for up-regulation, storage discharge (r - 1) above 1, storage charge |r| below 0;
    generators are no Power TAC customers.
    """
    hours = max(0.0, window_end - now) / 3600
    tariff = next((t for t in site.tariffs if t.id == order.tariff_id), None)
    if tariff is None:
        return math.inf  # an order for a tariff the file does not know: let the site decide
    r = order.exercise_ratio
    total = 0.0
    for name in tariff.assets:
        device = site.device(name)
        if isinstance(device, Battery):
            total += (
                max(0.0, r - 1.0) * device.max_discharge_kw if r > 0 else -r * device.max_charge_kw
            ) * hours
        elif isinstance(device, FlexibleLoad) and r > 0:
            profile = tuple((float(t), float(kw)) for t, kw in device.baseline_profile)
            curtailable = device.curtailable_share * profile_kw(profile, now)
            total += min(r, 1.0) * curtailable * hours
    return total


def control_message(exercise: Exercise, timeslot_start: float) -> dict[str, Any]:
    return dump(
        BalancingControlMsg(
            v=1,
            id=f"bce-{uuid.uuid4().hex[:16]}",
            tariff_id=exercise.tariff_id,
            timeslot_start=moment(timeslot_start),
            kwh=exercise.kwh,
            payment=exercise.payment,
        )
    )


def economic_message(tariff_id: str, timeslot_start: float, ratio: float) -> dict[str, Any]:
    return dump(
        EconomicControlMsg(
            v=1,
            id=f"ece-{uuid.uuid4().hex[:16]}",
            tariff_id=tariff_id,
            timeslot_start=moment(timeslot_start),
            curtailment_ratio=ratio,
        )
    )


# Sends one balancing_control payload, returns the site's ack (None: no ack in time).
SendControl = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any] | None]]


async def cover_imbalance(
    orders: Mapping[str, Order],
    imbalance_kwh: float,
    capacity_kwh: Mapping[str, float],
    send: SendControl,
    timeslot_start: float,
    *,
    tariff: str | None = None,
    payment_per_kwh: float | None = None,
    regulating_price: float | None = None,
) -> float:
    """Exercise orders in rounds until the imbalance is covered or no order has room left.

    An order whose event came back clipped or rejected is full; what it did not take goes to
    the next cheapest in the next round. Returns the signed energy left uncovered.
    """
    remaining = imbalance_kwh
    left = dict(capacity_kwh)
    full: set[str] = set()
    for _ in range(len(orders) + 1):
        caps = {t: 0.0 if t in full else left.get(t, math.inf) for t in orders}
        plan, _unmet = plan_exercise(
            orders.values(),
            remaining,
            caps,
            tariff=tariff,
            payment_per_kwh=payment_per_kwh,
            regulating_price=regulating_price,
        )
        if not plan:
            break
        for exercise in plan:
            ack = await send(control_message(exercise, timeslot_start))
            status = ack.get("status") if ack else None
            accepted = (
                float((ack or {}).get("accepted_kwh") or 0.0)
                if status in ("accepted", "clipped")
                else 0.0
            )
            if status == "accepted" and not (ack or {}).get("accepted_kwh"):
                accepted = exercise.kwh  # an older site that does not echo accepted_kwh
            remaining -= accepted
            left[exercise.tariff_id] = left.get(exercise.tariff_id, math.inf) - abs(accepted)
            if status != "accepted":
                full.add(exercise.tariff_id)
        if abs(remaining) < STEP_KWH or remaining * imbalance_kwh < 0:
            return 0.0
    return round(remaining, 6)
