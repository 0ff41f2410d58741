"""The D3A (gsy-e) balancing agent: after each spot trade, buy balancing energy.

gsy-e's BalancingAgent follows the spot market of its lower hierarchy: for a spot trade of
energy E it buys `balancing_spot_trade_ratio x E` upward (from supply offers, energy > 0)
and as much downward (from demand offers, energy < 0) in the one-sided pay-as-offer balancing
market, walking the offers cheapest rate first and taking the last one partly. The accepted
part keeps the offer id and pays the offer's rate for the energy taken.

The clearing itself is a pure function (`clear_balancing`); `BalancingAgent` keeps the order
book and turns a clearing into wire messages.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flexedge.contract.messages import BalancingTradeMsg, moment
from flexedge.contract.wire import dump

log = logging.getLogger(__name__)

# The site rounds offers to 0.1 Wh and refuses a zero trade; a smaller fill is not a trade.
STEP_KWH = 1e-4


@dataclass(frozen=True, slots=True)
class BookOffer:
    id: str
    asset: str
    slot_start: float  # epoch seconds
    energy_kwh: float  # signed: > 0 supply (up), < 0 demand (down)
    rate_ct_per_kwh: float
    slot_start_text: str = ""  # as the site wrote it, echoed back in trades


@dataclass(frozen=True, slots=True)
class Fill:
    offer: BookOffer
    energy_kwh: float  # signed like the offer, |energy| <= what is left of it

    @property
    def price_ct(self) -> float:
        return round(self.offer.rate_ct_per_kwh * abs(self.energy_kwh), 6)


@dataclass(frozen=True, slots=True)
class Clearing:
    fills: tuple[Fill, ...]
    unmet_up_kwh: float  # wanted but not on offer
    unmet_down_kwh: float


def _floor(kwh: float) -> float:
    # Never buy more than is left of an offer; the small nudge keeps 0.0030 from flooring
    # to 0.0029 because of binary floats.
    return math.floor(kwh / STEP_KWH + 1e-6) * STEP_KWH


def clear_balancing(
    offers: Iterable[BookOffer],
    *,
    slot_start: float,
    up_kwh: float,
    down_kwh: float,
    bought_kwh: Mapping[str, float] | None = None,
) -> Clearing:
    """Buy `up_kwh` from supply offers and `down_kwh` (>= 0) from demand offers of the slot
    starting at `slot_start`, cheapest rate first, taking an offer partly when less is
    needed. `bought_kwh` is what earlier clearings already took of each offer (magnitudes)."""
    bought = bought_kwh or {}
    need = {1: max(0.0, up_kwh), -1: max(0.0, down_kwh)}
    fills: list[Fill] = []
    # The id breaks ties so equal rates clear the same way every run.
    for offer in sorted(offers, key=lambda o: (o.rate_ct_per_kwh, o.id)):
        if abs(offer.slot_start - slot_start) > 1e-3 or offer.energy_kwh == 0:
            continue
        direction = 1 if offer.energy_kwh > 0 else -1
        left = abs(offer.energy_kwh) - bought.get(offer.id, 0.0)
        take = _floor(min(left, need[direction]))
        if take < STEP_KWH:
            continue
        fills.append(Fill(offer, round(direction * take, 6)))
        need[direction] -= take
    return Clearing(tuple(fills), round(need[1], 6), round(need[-1], 6))


def parse_offer(body: Mapping[str, Any]) -> BookOffer | None:
    """A balancing_offer payload as a book entry, or None if it is not one we can trade."""
    try:
        text = str(body["slot_start"])
        return BookOffer(
            id=str(body["id"]),
            asset=str(body["asset"]),
            slot_start=datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(),
            energy_kwh=float(body["energy_kwh"]),
            rate_ct_per_kwh=float(body["rate_ct_per_kwh"]),
            slot_start_text=text,
        )
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring malformed balancing offer %s", body.get("id"))
        return None


@dataclass
class BalancingAgent:
    """The order book of the balancing market and what the agent already bought of it."""

    spot_trade_ratio: float
    offers: dict[str, BookOffer] = field(default_factory=dict)
    bought_kwh: dict[str, float] = field(default_factory=dict)

    def add_offer(self, offer: BookOffer) -> None:
        # A repeated offer (QoS 1 redelivery, site restart) keeps what was bought of it.
        self.offers[offer.id] = offer

    def forget_before(self, ts: float) -> None:
        """Drop offers of slots that started before `ts` (they can no longer be traded)."""
        for offer_id in [i for i, o in self.offers.items() if o.slot_start < ts]:
            del self.offers[offer_id]
            self.bought_kwh.pop(offer_id, None)

    def follow_spot_trade(self, energy_kwh: float, slot_start: float) -> Clearing:
        """Clear `ratio x energy` up and down in the slot and book what was bought."""
        target = self.spot_trade_ratio * abs(energy_kwh)
        clearing = clear_balancing(
            self.offers.values(),
            slot_start=slot_start,
            up_kwh=target,
            down_kwh=target,
            bought_kwh=self.bought_kwh,
        )
        for fill in clearing.fills:
            self.bought_kwh[fill.offer.id] = self.bought_kwh.get(fill.offer.id, 0.0) + abs(
                fill.energy_kwh
            )
        return clearing


def trade_message(fill: Fill) -> dict[str, Any]:
    """The balancing_trade payload for a fill (wire contract v1)."""
    text = fill.offer.slot_start_text
    return dump(
        BalancingTradeMsg(
            v=1,
            id=f"bt-{uuid.uuid4().hex[:16]}",
            offer_id=fill.offer.id,
            asset=fill.offer.asset,
            # The offer's own slot start (the site writes it to the millisecond, so it comes
            # back as it was written).
            slot_start=datetime.fromisoformat(text) if text else moment(fill.offer.slot_start),
            energy_kwh=fill.energy_kwh,
            price_ct=fill.price_ct,
        )
    )
