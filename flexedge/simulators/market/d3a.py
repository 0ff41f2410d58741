"""The D3A (gsy-e) balancing agent: after each spot trade, buy balancing energy.

It plays gsy-e's BalancingAgent on gsy-e's one-sided pay-as-offer BalancingMarket, as their
code does it (gsy-e 1.3.0: models/market/balancing.py, models/strategy/market_agents/
balancing_agent.py); `flexedge market --engine gsy-e` runs those classes themselves
(gsy_engine.py) and a differential test holds the two to the same trades:

- it follows only spot trades in which the site buys (gsy-e: the agent's area is the buyer);
- for a spot trade of E it wants `ratio x E` upward and as much downward, plus what it could
  not buy after the earlier spot trades of the slot (the unmatched energy is carried);
- the book is one list in ascending signed rate, `round(price / energy, 8)`: a demand offer
  (energy < 0, price > 0) has a negative rate, so demand offers come first, highest price per
  kWh first, then supply offers, cheapest first; equal rates keep the order they were posted
  in (a residual counts as posted when it was split off);
- it walks that list once, buying whole offers while the target is larger and the last one
  partly; gsy-e's tolerance of 2e-5 kWh decides what is still wanted, and an offer below it
  counts as downward whatever its sign (gsy-e's quirk, kept);
- a partly bought offer keeps its id for the part bought, and the rest becomes a new offer
  with a new id (the residual); the original id leaves the book;
- the market takes offers only from assets in its registry (the site's asset registry).

The clearing itself is a pure function (`clear_balancing`); `BalancingAgent` keeps the order
book and the carried energy, and `trade_message` turns a fill into a wire message.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from flexedge.contract.messages import BalancingTradeMsg, moment
from flexedge.contract.wire import dump

log = logging.getLogger(__name__)

# gsy-e's FLOATING_POINT_TOLERANCE: less than this is not wanted, and an offer smaller than
# this is taken as a downward one (gsy-e's agent, kept for the same trades).
TOLERANCE_KWH = 2e-5
RATE_DECIMALS = 8  # gsy-e's ENERGY_RATE_PRECISION
RESIDUAL_MARK = "~r"


@dataclass(frozen=True, slots=True)
class BookOffer:
    id: str
    asset: str
    slot_start: float  # epoch seconds
    energy_kwh: float  # signed: > 0 supply (up), < 0 demand (down)
    rate_ct_per_kwh: float  # as the site wrote it: > 0 both ways
    slot_start_text: str = ""  # as the site wrote it, echoed back in trades
    price_ct: float | None = None  # as the site wrote it; else rate x |energy|

    @property
    def price(self) -> float:
        if self.price_ct is not None:
            return self.price_ct
        return round(self.rate_ct_per_kwh * abs(self.energy_kwh), 6)

    @property
    def signed_rate(self) -> float:
        """gsy-e's energy_rate: negative for a demand offer."""
        return round(self.price / self.energy_kwh, RATE_DECIMALS)


@dataclass(frozen=True, slots=True)
class Fill:
    offer: BookOffer
    energy_kwh: float  # signed like the offer, |energy| <= the offer's
    price_ct: float  # pay-as-offer: energy x the offer's signed rate
    residual: BookOffer | None = None  # the rest of a partly bought offer, under a new id


@dataclass(frozen=True, slots=True)
class Clearing:
    fills: tuple[Fill, ...]
    unmet_up_kwh: float  # wanted but not on offer: carried to the next spot trade
    unmet_down_kwh: float


def residual_id(offer_id: str) -> str:
    """The id of the rest of `offer_id` after a partial trade: `X~r1`, then `X~r2`, ..."""
    root, mark, count = offer_id.rpartition(RESIDUAL_MARK)
    if mark and count.isdigit():
        return f"{root}{RESIDUAL_MARK}{int(count) + 1}"
    return f"{offer_id}{RESIDUAL_MARK}1"


def _price(energy_kwh: float, rate: float) -> float:
    # gsy-e prices a trade as Decimal(energy) x Decimal(rate), both from floats.
    return float(Decimal(energy_kwh) * Decimal(rate))


def _take(offer: BookOffer, target_kwh: float) -> Fill:
    """Buy `target_kwh` (signed) of `offer`, or all of it when that is not more."""
    rate = offer.signed_rate
    if abs(offer.energy_kwh) <= abs(target_kwh):
        return Fill(offer, offer.energy_kwh, _price(offer.energy_kwh, rate))
    rest = replace(
        offer,
        id=residual_id(offer.id),
        energy_kwh=offer.energy_kwh - target_kwh,
        price_ct=(1 - target_kwh / offer.energy_kwh) * offer.price,
    )
    return Fill(offer, target_kwh, _price(target_kwh, rate), rest)


def clear_balancing(offers: Iterable[BookOffer], *, up_kwh: float, down_kwh: float) -> Clearing:
    """Buy `up_kwh` and `down_kwh` (magnitudes) from `offers`, the book of one slot in the
    order its offers were posted, the way gsy-e's balancing agent walks its market."""
    need_up, need_down = up_kwh, down_kwh
    fills: list[Fill] = []
    # sorted() is stable: equal rates keep the book's order, as in gsy-e.
    for offer in sorted(offers, key=lambda o: o.signed_rate):
        if offer.energy_kwh > TOLERANCE_KWH and need_up > TOLERANCE_KWH:
            fill = _take(offer, need_up)
            need_up -= abs(fill.energy_kwh)
        elif offer.energy_kwh < TOLERANCE_KWH < need_down:
            fill = _take(offer, -need_down)
            need_down -= abs(fill.energy_kwh)
        else:
            continue
        fills.append(fill)
    return Clearing(tuple(fills), need_up, need_down)


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
            price_ct=float(body["price_ct"]) if "price_ct" in body else None,
        )
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring malformed balancing offer %s", body.get("id"))
        return None


@dataclass
class BalancingAgent:
    """The balancing market's book, its registry check, and the agent's carried energy."""

    spot_trade_ratio: float
    registry: Mapping[str, tuple[float, float]]  # asset -> (demand rate, supply rate)
    offers: dict[str, BookOffer] = field(default_factory=dict)
    unmatched: dict[float, tuple[float, float]] = field(default_factory=dict)  # slot: up, down
    seen: set[str] = field(default_factory=set)

    def add_offer(self, offer: BookOffer) -> str | None:
        """Post `offer`; the reason if the market refuses it."""
        if offer.asset not in self.registry:
            return f"asset {offer.asset!r} is not in the market's registry"
        if offer.energy_kwh == 0:
            return "an offer of 0 kWh"
        # A repeated offer (QoS 1 redelivery, a site restart) must not bring back what was
        # bought of it.
        if offer.id not in self.seen:
            self.seen.add(offer.id)
            self.offers[offer.id] = offer
        return None

    def forget_before(self, ts: float) -> None:
        """Drop offers of slots that started before `ts` (they can no longer be traded)."""
        for offer_id in [i for i, o in self.offers.items() if o.slot_start < ts]:
            del self.offers[offer_id]
        for slot in [s for s in self.unmatched if s < ts]:
            del self.unmatched[slot]

    def follow_spot_trade(self, energy_kwh: float, side: str, slot_start: float) -> Clearing | None:
        """Clear `ratio x energy` up and down, plus what is carried, in the slot of a spot
        trade the site buys; None for a spot trade the agent does not follow."""
        if side != "buy":
            return None
        carried_up, carried_down = self.unmatched.get(slot_start, (0.0, 0.0))
        clearing = clear_balancing(
            [o for o in self.offers.values() if abs(o.slot_start - slot_start) <= 1e-3],
            up_kwh=energy_kwh * self.spot_trade_ratio + carried_up,
            down_kwh=energy_kwh * self.spot_trade_ratio + carried_down,
        )
        for fill in clearing.fills:
            del self.offers[fill.offer.id]
            if fill.residual is not None:
                self.seen.add(fill.residual.id)
                self.offers[fill.residual.id] = fill.residual
        self.unmatched[slot_start] = (clearing.unmet_up_kwh, clearing.unmet_down_kwh)
        return clearing


def trade_message(fill: Fill) -> dict[str, Any]:
    """The balancing_trade payload for a fill (wire contract v1)."""
    text = fill.offer.slot_start_text
    payload = dump(
        BalancingTradeMsg(
            v=1,
            id=f"bt-{uuid.uuid4().hex[:16]}",
            offer_id=fill.offer.id,
            asset=fill.offer.asset,
            # The offer's own slot start (the site writes it to the millisecond, so it comes
            # back as it was written).
            slot_start=datetime.fromisoformat(text) if text else moment(fill.offer.slot_start),
            energy_kwh=fill.energy_kwh,
            price_ct=round(fill.price_ct, 6),
            residual_offer_id=None if fill.residual is None else fill.residual.id,
        )
    )
    if payload["residual_offer_id"] is None:  # a full fill: the field is left out
        del payload["residual_offer_id"]
    return payload
