"""Residual offer ids, the gsy-e way.

When gsy-e's balancing market takes part of an offer, the traded part keeps the offer's id and
the rest is re-posted under a new id (`residual_offer_id` on the trade). A later trade naming
that id is a trade on the same offer: the energy left is counted once, on the offer the site
published (its root), whichever id names it. A residual of a residual names the same root, so
any chain of residual ids comes back to one offer and one count.

Plain data: `residuals` maps each announced residual id to its root offer id; `traded_kwh`
maps root ids to what the market has taken of them (kWh, >= 0).
"""

from __future__ import annotations

from collections.abc import Mapping

from flexedge.controller.core.model import Offer


def root_offer(
    offer_id: str, offers: Mapping[str, Offer], residuals: Mapping[str, str]
) -> Offer | None:
    """The published offer `offer_id` names, itself or through a residual id (None: neither)."""
    offer = offers.get(offer_id)
    if offer is not None:
        return offer
    root = residuals.get(offer_id)
    return offers.get(root) if root is not None else None


def named(offer_id: str, root: Offer) -> str:
    """How a reason names the offer a trade is on: its id, and the root if that differs."""
    if offer_id == root.id:
        return f"offer {root.id!r}"
    return f"offer {offer_id!r} (the rest of offer {root.id!r})"


def energy_left(root: Offer, traded_kwh: Mapping[str, float]) -> float:
    """kWh still on offer (>= 0), whichever id the next trade names."""
    return max(0.0, abs(root.energy_kwh) - abs(traded_kwh.get(root.id, 0.0)))


def residual_problem(
    residual_id: str,
    root: Offer,
    offers: Mapping[str, Offer],
    residuals: Mapping[str, str],
) -> str | None:
    """Why `residual_id` cannot become a new name for the rest of `root`, if it cannot.

    It must be new: an id of a published offer (this asset's or another's) or an id already
    announced as a residual would make two offers count as one.
    """
    announced_for = residuals.get(residual_id)
    other = offers.get(residual_id if announced_for is None else announced_for)
    if other is not None and other.asset != root.asset:
        return (
            f"residual_offer_id {residual_id!r} names another asset's offer "
            f"({other.asset!r}, offer {other.id!r})"
        )
    if announced_for is not None:
        return (
            f"residual_offer_id {residual_id!r} was already announced for offer {announced_for!r}"
        )
    if other is not None:
        return f"residual_offer_id {residual_id!r} is the id of an existing offer"
    return None


def record_trade(
    root_id: str,
    kwh: float,
    residual_id: str | None,
    traded_kwh: Mapping[str, float],
    residuals: Mapping[str, str],
) -> tuple[dict[str, float], dict[str, str]]:
    """The counts after an admitted trade of `kwh` on the offer `root_id` (new mappings)."""
    traded = dict(traded_kwh)
    traded[root_id] = traded.get(root_id, 0.0) + abs(kwh)
    aliases = dict(residuals)
    if residual_id is not None:
        aliases[residual_id] = root_id
    return traded, aliases


def live_residuals(residuals: Mapping[str, str], offers: Mapping[str, Offer]) -> dict[str, str]:
    """The residual ids whose root offer is still live (the others name nothing any more)."""
    return {alias: root for alias, root in residuals.items() if root in offers}
