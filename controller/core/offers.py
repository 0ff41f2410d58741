"""D3A balancing offers for a battery, sized by gsy-e's storage rules, clipped to physics.

gsy-e's storage strategy offers `demand_ratio x free capacity` (charge, energy < 0) at the
demand rate and `supply_ratio x stored energy` (discharge, energy > 0) at the supply rate.
A simulated gsy-e battery can always honour that; a real one is bounded by its power rating
over the time left in the slot, its SoC window and what earlier commitments already use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from controller.core.model import BatteryLimits, Offer

# Offers smaller than this are not worth a market message (1 Wh).
MIN_OFFER_KWH = 0.001


@dataclass(frozen=True, slots=True)
class OfferRules:
    demand_ratio: float
    supply_ratio: float
    demand_rate_ct_per_kwh: float
    supply_rate_ct_per_kwh: float


def offer_id(site: str, asset: str, slot_start: float, side: str) -> str:
    """Stable id: re-publishing after a restart repeats the same offer, not a new one."""
    stamp = datetime.fromtimestamp(slot_start, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{site}.{asset}.{stamp}.{side}"


def battery_offers(
    *,
    site: str,
    limits: BatteryLimits,
    soc: float,
    rules: OfferRules,
    slot_start: float,
    slot_end: float,
    now: float,
    committed_up_kwh: float = 0.0,
    committed_down_kwh: float = 0.0,
) -> list[Offer]:
    """The battery's demand and supply offers for the rest of the slot (none may be empty)."""
    hours_left = max(0.0, slot_end - max(now, slot_start)) / 3600.0
    supply = min(
        rules.supply_ratio * limits.dischargeable_kwh(soc),
        limits.max_discharge_kw * hours_left,
    ) - committed_up_kwh
    demand = min(
        rules.demand_ratio * limits.chargeable_kwh(soc),
        limits.max_charge_kw * hours_left,
    ) - committed_down_kwh
    offers: list[Offer] = []
    if demand >= MIN_OFFER_KWH:
        offers.append(Offer(
            id=offer_id(site, limits.asset, slot_start, "demand"), asset=limits.asset,
            slot_start=slot_start, slot_end=slot_end, energy_kwh=-_round_down(demand),
            rate_ct_per_kwh=rules.demand_rate_ct_per_kwh))
    if supply >= MIN_OFFER_KWH:
        offers.append(Offer(
            id=offer_id(site, limits.asset, slot_start, "supply"), asset=limits.asset,
            slot_start=slot_start, slot_end=slot_end, energy_kwh=_round_down(supply),
            rate_ct_per_kwh=rules.supply_rate_ct_per_kwh))
    return offers


def _round_down(kwh: float) -> float:
    """Round to 0.1 Wh without ever offering more than the device can do."""
    return int(kwh * 10000) / 10000
