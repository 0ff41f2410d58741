"""D3A balancing offers, sized by gsy-e's rules per kind, then clipped to physics.

gsy-e's strategies size offers from energy alone:
- storage: `demand_ratio x free capacity` (charge, energy < 0) at the demand rate and
  `supply_ratio x stored energy` (discharge, energy > 0) at the supply rate;
- load: `demand_ratio x the energy it needs in the slot` (consume more) and, after a spot
  trade in which it bought E and with flexible loads supported, `supply_ratio x E` (curtail);
- commercial power plant: its energy per slot at the supply rate.
A simulated gsy-e asset can always honour that; a real one is bounded by its power over the
time left in the slot, its SoC window and what earlier commitments already use, so every
offer here is clipped to the asset's capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flexedge.controller.core.capability import Committed, Headroom, capability
from flexedge.controller.core.model import BatteryLimits, Offer

# Offers smaller than this are not worth a market message (1 Wh).
MIN_OFFER_KWH = 0.001
NOTHING_COMMITTED = Committed()


@dataclass(frozen=True, slots=True)
class OfferRules:
    demand_ratio: float
    supply_ratio: float
    demand_rate_ct_per_kwh: float
    supply_rate_ct_per_kwh: float


def offer_id(site: str, asset: str, slot_start: float, side: str, tag: str = "") -> str:
    """Stable id: re-publishing after a restart repeats the same offer, not a new one."""
    stamp = datetime.fromtimestamp(slot_start, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{site}.{asset}.{stamp}.{side}" + (f".{tag}" if tag else "")


def clipped_offers(
    *,
    site: str,
    asset: str,
    headroom: Headroom,
    wanted_demand_kwh: float,
    wanted_supply_kwh: float,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed: Committed = NOTHING_COMMITTED,
    tag: str = "",
) -> list[Offer]:
    """Offers for what the rules want, cut to what the asset can do in the rest of the slot.
    A side whose balancing rate is 0 makes no offer: its price would be 0, and gsy-e's
    strategies post no offer of price 0."""
    start = max(now, slot_start)
    demand = min(wanted_demand_kwh, capability(headroom, -1, start, slot_end, committed))
    supply = min(wanted_supply_kwh, capability(headroom, +1, start, slot_end, committed))
    offers: list[Offer] = []
    if demand >= MIN_OFFER_KWH and rules.demand_rate_ct_per_kwh > 0:
        offers.append(
            Offer(
                id=offer_id(site, asset, slot_start, "demand", tag),
                asset=asset,
                slot_start=slot_start,
                slot_end=slot_end,
                energy_kwh=-_round_down(demand),
                rate_ct_per_kwh=rules.demand_rate_ct_per_kwh,
            )
        )
    if supply >= MIN_OFFER_KWH and rules.supply_rate_ct_per_kwh > 0:
        offers.append(
            Offer(
                id=offer_id(site, asset, slot_start, "supply", tag),
                asset=asset,
                slot_start=slot_start,
                slot_end=slot_end,
                energy_kwh=_round_down(supply),
                rate_ct_per_kwh=rules.supply_rate_ct_per_kwh,
            )
        )
    return offers


def battery_offers(
    *,
    site: str,
    limits: BatteryLimits,
    soc: float,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed: Committed = NOTHING_COMMITTED,
) -> list[Offer]:
    """Storage: a share of free capacity (charge) and of stored energy (discharge)."""
    return clipped_offers(
        site=site,
        asset=limits.asset,
        headroom=Headroom.of_battery(limits, soc),
        wanted_demand_kwh=rules.demand_ratio * limits.chargeable_kwh(soc),
        wanted_supply_kwh=rules.supply_ratio * limits.dischargeable_kwh(soc),
        rules=rules,
        slot_start=slot_start,
        slot_end=slot_end,
        now=now,
        committed=committed,
    )


def load_offers(
    *,
    site: str,
    asset: str,
    demand_kw: float,
    headroom: Headroom,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed: Committed = NOTHING_COMMITTED,
) -> list[Offer]:
    """Load: a share of the energy it needs in the slot, drawing `demand_kw` (consume more).
    Clipped to its down capability: only a load that can draw more than its baseline (a
    consumption setpoint with `max_extra_kw`) has any, so other loads offer nothing."""
    need_kwh = demand_kw * _hours(slot_start, slot_end)
    return clipped_offers(
        site=site,
        asset=asset,
        headroom=headroom,
        wanted_demand_kwh=rules.demand_ratio * need_kwh,
        wanted_supply_kwh=0.0,
        rules=rules,
        slot_start=slot_start,
        slot_end=slot_end,
        now=now,
        committed=committed,
    )


def generator_offers(
    *,
    site: str,
    asset: str,
    headroom: Headroom,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed: Committed = NOTHING_COMMITTED,
) -> list[Offer]:
    """Commercial power plant: its energy per slot at the supply rate (gsy-e's rule)."""
    return clipped_offers(
        site=site,
        asset=asset,
        headroom=headroom,
        wanted_demand_kwh=0.0,
        wanted_supply_kwh=headroom.up_kw * _hours(slot_start, slot_end),
        rules=rules,
        slot_start=slot_start,
        slot_end=slot_end,
        now=now,
        committed=committed,
    )


def _hours(slot_start: float, slot_end: float) -> float:
    return (slot_end - slot_start) / 3600.0


def _round_down(kwh: float) -> float:
    """Round to 0.1 Wh without ever offering more than the device can do."""
    return int(kwh * 10000) / 10000


def load_supply_after_spot_trade(
    *,
    site: str,
    asset: str,
    trade_id: str,
    bought_kwh: float,
    headroom: Headroom,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed: Committed = NOTHING_COMMITTED,
) -> list[Offer]:
    """gsy-e's load, after buying `bought_kwh` on the spot market, offers to curtail
    `supply_ratio` of it. The id carries the spot trade, so each trade has its own offer."""
    return clipped_offers(
        site=site,
        asset=asset,
        headroom=headroom,
        wanted_demand_kwh=0.0,
        wanted_supply_kwh=rules.supply_ratio * bought_kwh,
        rules=rules,
        slot_start=slot_start,
        slot_end=slot_end,
        now=now,
        committed=committed,
        tag=f"after-{trade_id}",
    )
