"""gsy-e's own BalancingMarket and BalancingAgent as the D3A side of `flexedge market`.

`flexedge market --engine gsy-e` runs gsy-e 1.3.0's classes themselves, not a reading of them:
for every slot, the site's area gets its own `BalancingMarket` (its lower market), the grid a
`BalancingMarket` above it and a one-sided spot market, and a `BalancingAgent` owned by the
site's area sits between them. `DeviceRegistry.REGISTRY` is filled from the site's asset
registry, so the market refuses an offer of any other asset, and the balancing market is
enabled in gsy-e's settings. Every site offer is posted into its slot's market with its id and
price; a scenario spot trade becomes a gsy-e spot trade in the grid's spot market of the slot
(bought by the site's area, or sold by it) handed to the agent, which decides itself whether to
follow it; every balancing trade the market then makes is handed back as a `Fill`, with the
id gsy-e gave the rest of a partly bought offer (`trade.residual`).

gsy-e's bugs stay gsy-e's; the bridge works around them:
- `accept_offer` pops the offer before it checks the energy's sign, so a trade of the wrong
  sign deletes the offer and then raises; and it checks the sign before it defaults a missing
  `energy` to the offer's, so an accept without energy raises TypeError and deletes the offer
  too. Each market's `accept_offer` is wrapped (`_guard_accept`): a wrong sign raises
  InvalidBalancingTradeException while the offer is still in the book, and a missing energy
  is the offer's energy (what gsy-e meant) before gsy-e sees it. gsy-e's agent never makes
  either call; the guard keeps the book whole if it ever does.
- The market's blockchain interface `bc` defaults to None, and every accept then raises
  AttributeError after changing the book: each market gets a `NonBlockchainInterface`.
- Time slots must be pendulum DateTimes: a stdlib datetime raises AttributeError on the first
  offer (gsy-e formats it with pendulum's `.format`). Slot starts are converted.
- The default `grid_fee_type` is read when gsy-e is imported: it is passed explicitly (1,
  constant fees of 0, so prices are pay-as-offer).
- gsy-e logs every trade at INFO: its loggers are held at WARNING.
The agent gets no ticks: gsy-e's agent retries its unmatched energy on every tick, the bridge
(like the built-in agent) carries it to the next followed spot trade of the slot.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from flexedge.errors import FlexedgeError
from flexedge.simulators.market.d3a import BookOffer, Clearing, Fill

log = logging.getLogger(__name__)

GSY_INSTALL = (
    "install it into this virtualenv: pip install --no-deps ../shared/thirdparty/gsy/*.whl, "
    "then its requirements.txt but click==8.1.7, which breaks flexedge's click (./flexedge.sh "
    "test does both; see the README, 'Against gsy-e's own market')"
)
GRID = "Grid"
CONSTANT_FEES = 1  # gsy-e's GRID_FEE_TYPE for a constant fee (0 here)


def import_gsy() -> SimpleNamespace:
    """gsy-e's classes, or a FlexedgeError that says how to install gsy-e."""
    try:
        import pendulum
        from gsy_e.events.event_structures import MarketEvent
        from gsy_e.gsy_e_core.blockchain_interface import NonBlockchainInterface
        from gsy_e.gsy_e_core.device_registry import DeviceRegistry
        from gsy_e.gsy_e_core.exceptions import (
            DeviceNotInRegistryError,
            InvalidBalancingTradeException,
            InvalidOffer,
        )
        from gsy_e.models.market.balancing import BalancingMarket
        from gsy_e.models.market.one_sided import OneSidedMarket
        from gsy_e.models.strategy.market_agents.balancing_agent import BalancingAgent
        from gsy_framework.constants_limits import ConstSettings
        from gsy_framework.data_classes import Offer, Trade, TraderDetails
    except ImportError as exc:
        raise FlexedgeError(f"--engine gsy-e needs gsy-e ({exc}): {GSY_INSTALL}") from None
    return SimpleNamespace(
        pendulum=pendulum,
        MarketEvent=MarketEvent,
        NonBlockchainInterface=NonBlockchainInterface,
        DeviceRegistry=DeviceRegistry,
        DeviceNotInRegistryError=DeviceNotInRegistryError,
        InvalidBalancingTradeException=InvalidBalancingTradeException,
        InvalidOffer=InvalidOffer,
        BalancingMarket=BalancingMarket,
        OneSidedMarket=OneSidedMarket,
        BalancingAgent=BalancingAgent,
        ConstSettings=ConstSettings,
        Offer=Offer,
        Trade=Trade,
        TraderDetails=TraderDetails,
    )


class _Area:
    """What gsy-e's BalancingAgent reads of its owner, an Area in gsy-e."""

    def __init__(self, name: str, ratio: float, parent: _Area | None) -> None:
        self.name = name
        self.uuid = name
        self.balancing_spot_trade_ratio = ratio
        self.parent = parent
        self.current_tick = 0
        self.log = logging.getLogger(f"{__name__}.{name}")
        self.spot_markets: dict[str, Any] = {}

    def get_spot_or_future_market_by_id(self, market_id: str) -> Any:
        return self.spot_markets.get(market_id)


@dataclass
class _Slot:
    time_slot: Any  # pendulum DateTime
    market: Any  # the site area's BalancingMarket
    spot: Any  # the grid's spot market
    agent: Any
    trades: list[Any] = field(default_factory=list)  # BALANCING_TRADE events, in order


def _guard_accept(market: Any, gsy: SimpleNamespace) -> None:
    """Wrap `market.accept_offer` so that gsy-e's two deleting bugs cannot hit the book."""
    accept = market.accept_offer

    def guarded(
        offer_or_id: Any, buyer: Any, *, energy: float | None = None, trade_bid_info: Any = None
    ) -> Any:
        offer = market.offers.get(getattr(offer_or_id, "id", offer_or_id))
        if offer is not None:
            if energy is None:
                energy = offer.energy
            elif offer.energy * energy < 0:
                raise gsy.InvalidBalancingTradeException(
                    f"energy {energy} has not the sign of offer {offer.id} ({offer.energy})"
                )
        return accept(offer_or_id, buyer, energy=energy, trade_bid_info=trade_bid_info)

    market.accept_offer = guarded


class GsyBalancing:
    """The D3A engine on gsy-e's classes (see flexedge.simulators.market.engines)."""

    def __init__(self, site: str, ratio: float, registry: dict[str, tuple[float, float]]) -> None:
        self.gsy = gsy = import_gsy()
        for name in ("gsy_e", "gsy_framework"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Class-level state in gsy-e, read at call time: the last engine built sets it.
        gsy.DeviceRegistry.REGISTRY = dict(registry)
        gsy.ConstSettings.BalancingSettings.ENABLE_BALANCING_MARKET = True
        self.grid = _Area(GRID, ratio, None)
        self.area = _Area(site, ratio, self.grid)
        self.slots: dict[float, _Slot] = {}
        self.book: dict[str, BookOffer] = {}  # offers open in gsy-e, by gsy-e's id
        self.seen: set[str] = set()

    def _market(self, name: str, time_slot: Any, listener: Any = None) -> Any:
        bc = self.gsy.NonBlockchainInterface(str(uuid.uuid4()))
        return self.gsy.BalancingMarket(
            time_slot=time_slot,
            bc=bc,
            notification_listener=listener,
            grid_fee_type=CONSTANT_FEES,
            name=name,
        )

    def slot(self, slot_start: float) -> _Slot:
        """The markets and agent of the slot starting at `slot_start`, made when first used."""
        if slot_start in self.slots:
            return self.slots[slot_start]
        gsy = self.gsy
        time_slot = gsy.pendulum.from_timestamp(slot_start, tz="UTC")
        trades: list[Any] = []

        def listen(event: Any, market_id: str | None = None, **kwargs: Any) -> None:
            if event == gsy.MarketEvent.BALANCING_TRADE:
                trades.append(kwargs["trade"])

        market = self._market(self.area.name, time_slot, listen)
        _guard_accept(market, gsy)
        higher = self._market(GRID, time_slot)
        _guard_accept(higher, gsy)
        spot = gsy.OneSidedMarket(
            time_slot=time_slot, bc=gsy.NonBlockchainInterface(str(uuid.uuid4())), name=GRID
        )
        self.grid.spot_markets[spot.id] = spot
        agent = gsy.BalancingAgent(owner=self.area, higher_market=higher, lower_market=market)
        self.slots[slot_start] = _Slot(time_slot, market, spot, agent, trades)
        return self.slots[slot_start]

    def add_offer(self, offer: BookOffer) -> str | None:
        if offer.id in self.seen:
            return None  # a redelivery: gsy-e would post it again, and revive what was sold
        gsy = self.gsy
        try:
            self.slot(offer.slot_start).market.balancing_offer(
                price=offer.price,
                energy=offer.energy_kwh,
                seller=gsy.TraderDetails(offer.asset, offer.asset),
                offer_id=offer.id,
            )
        except gsy.DeviceNotInRegistryError:
            return f"asset {offer.asset!r} is not in the market's registry"
        except gsy.InvalidOffer:
            return "an offer of 0 kWh"
        self.seen.add(offer.id)
        self.book[offer.id] = offer
        return None

    def forget_before(self, ts: float) -> None:
        for slot_start in [s for s in self.slots if s < ts]:
            del self.grid.spot_markets[self.slots.pop(slot_start).spot.id]
        for offer_id in [i for i, o in self.book.items() if o.slot_start < ts]:
            del self.book[offer_id]

    def follow_spot_trade(self, energy_kwh: float, side: str, slot_start: float) -> Clearing | None:
        gsy = self.gsy
        slot = self.slot(slot_start)
        area = gsy.TraderDetails(self.area.name, self.area.uuid)
        grid = gsy.TraderDetails(GRID, GRID)
        seller, buyer = (grid, area) if side == "buy" else (area, grid)
        # The agent's engines read the traded offer's id, so the trade needs a real offer.
        spot_offer = gsy.Offer(
            str(uuid.uuid4()), slot.time_slot, 0.0, energy_kwh, seller, time_slot=slot.time_slot
        )
        trade = gsy.Trade(
            str(uuid.uuid4()),
            slot.time_slot,
            seller,
            buyer,
            energy_kwh,
            0.0,
            offer=spot_offer,
            time_slot=slot.time_slot,
            fee_price=0.0,
        )
        market = slot.market
        before = (market.unmatched_energy_upward, market.unmatched_energy_downward)
        first = len(slot.trades)
        slot.agent.event_listener(gsy.MarketEvent.OFFER_TRADED, market_id=slot.spot.id, trade=trade)
        made = slot.trades[first:]
        after = (market.unmatched_energy_upward, market.unmatched_energy_downward)
        if not made and after == before:
            return None  # the agent did not follow it (gsy-e: the site's area is not the buyer)
        return Clearing(tuple(self._fill(t) for t in made), float(after[0]), float(after[1]))

    def _fill(self, trade: Any) -> Fill:
        offer = self.book.pop(trade.match_details["offer"].id)
        residual = None
        if trade.residual is not None:
            rest = trade.residual
            residual = replace(offer, id=rest.id, energy_kwh=rest.energy, price_ct=rest.price)
            self.seen.add(rest.id)
            self.book[rest.id] = residual
        return Fill(offer, float(trade.traded_energy), float(trade.trade_price), residual)
