"""Which D3A balancing market the market simulator plays: the built-in one or gsy-e's own.

Both take the site's offers, follow the scenario's spot trades and answer with a `Clearing`
(flexedge.simulators.market.d3a) the runner sends to the site as balancing trades.
"""

from __future__ import annotations

from typing import Protocol

from flexedge.config.schema import SiteConfig
from flexedge.simulators.market.d3a import BalancingAgent, BookOffer, Clearing

ENGINES = ("builtin", "gsy-e")


class D3aEngine(Protocol):
    def add_offer(self, offer: BookOffer) -> str | None:
        """Post a site offer; the market's reason if it refuses it."""

    def forget_before(self, ts: float) -> None:
        """Drop the markets of slots that started before `ts`."""

    def follow_spot_trade(self, energy_kwh: float, side: str, slot_start: float) -> Clearing | None:
        """The balancing trades after a spot trade of the site; None if not followed."""


def d3a_engine(name: str, config: SiteConfig) -> D3aEngine:
    """The engine called `name` (one of ENGINES) for the site of `config`."""
    ratio = config.balancing.balancing_spot_trade_ratio
    if name == "builtin":
        return BalancingAgent(ratio, config.registry_rates())
    if name == "gsy-e":
        # Imported here: gsy-e is optional, and importing it takes most of a second.
        from flexedge.simulators.market.gsy_engine import GsyBalancing

        return GsyBalancing(config.site, ratio, config.registry_rates())
    raise ValueError(f"unknown D3A engine {name!r} (one of {', '.join(ENGINES)})")
