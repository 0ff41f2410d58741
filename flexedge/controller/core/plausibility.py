"""Limits on what a market message may ask, checked before any market rule: a time too far
ahead, a price or a payment no market pays. Far-future times once became open commitments
that later broke `status` (year 10000) and `flexedge report`; absurd prices and payments
would be logged and settled as if real."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flexedge.controller.core.control_admission import ControlRequest, EconomicControl
from flexedge.controller.core.trade_admission import SpotTrade, TradeRequest

MarketRequest = TradeRequest | SpotTrade | ControlRequest | EconomicControl


@dataclass(frozen=True, slots=True)
class Plausibility:
    """The site file's `limits` as the core takes them (defaults: the documented ones)."""

    # How far ahead a slot or timeslot may start.
    horizon_s: float = 86400.0
    # D3A trade and spot rates, ct/kWh, either sign.
    max_rate_ct_per_kwh: float = 1000.0
    # Power TAC order prices, per kWh, either sign (down orders are negative).
    max_price_per_kwh: float = 10.0
    # Power TAC control event payments, either sign.
    max_payment: float = 100000.0


def _amount_problem(name: str, value: float, bound: float) -> str | None:
    if not math.isfinite(value):
        return f"{name} must be a finite number"
    if abs(value) > bound:
        return (
            f"{name} {value:g} is beyond the site's limit of ±{bound:g} (limits in the site file)"
        )
    return None


def request_problem(request: MarketRequest, limits: Plausibility, now: float) -> str | None:
    """Why `request` is not plausible at `now`, or None when it is."""
    if isinstance(request, (ControlRequest, EconomicControl)):
        field, start = "timeslot_start", request.timeslot_start
    else:
        field, start = "slot_start", request.slot_start
    if not math.isfinite(start) or start > now + limits.horizon_s:
        return f"{field} is more than {limits.horizon_s:g} s ahead (limits.horizon_s of the site)"
    if isinstance(request, TradeRequest):
        return _amount_problem("price_ct", request.price_ct, limits.max_rate_ct_per_kwh)
    if isinstance(request, SpotTrade):
        return _amount_problem(
            "rate_ct_per_kwh", request.rate_ct_per_kwh, limits.max_rate_ct_per_kwh
        )
    if isinstance(request, ControlRequest):
        return _amount_problem("payment", request.payment, limits.max_payment)
    return None


def order_price_problem(price_per_kwh: float, limits: Plausibility) -> str | None:
    """Why an operator's order price is refused, or None."""
    return _amount_problem("price_per_kwh", price_per_kwh, limits.max_price_per_kwh)
