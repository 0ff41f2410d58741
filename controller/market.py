"""The market side of the shell: inbound messages to acks and commitments, offers and orders out.

Every inbound message gets exactly one ack. The inbound row, the commitment and the ack are
written in one transaction before anything is published, so nothing acknowledged is lost and a
redelivered message is recognised by its id.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from config.loader import Site
from controller.control import ControlLoop
from controller.core.admission import StandingOrder, TradeRequest, admit_control, admit_trade
from controller.core.capability import committed_on
from controller.core.model import AckStatus, Admission, Offer
from controller.core.offers import OfferRules, battery_offers
from controller.errors import MessageRejected
from controller.mqtt import Inbound
from controller.outbox import Outbox
from controller.store import Store
from controller.wire import (
    INBOUND_TYPES,
    ack,
    balancing_offer,
    balancing_order,
    iso,
    parse_inbound,
    peek_id,
)

log = logging.getLogger(__name__)


class MarketDesk:
    def __init__(self, site: Site, control: ControlLoop, store: Store, outbox: Outbox,
                 clock: Callable[[], float],
                 schedule_tick_at: Callable[[float], None]) -> None:
        self.site = site
        self.config = site.config
        self.control = control
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self._schedule_tick_at = schedule_tick_at
        self.offers: dict[str, Offer] = {}
        self.traded_kwh: dict[str, float] = {}
        self.orders = {t.id: StandingOrder(t.id, tuple(t.assets), t.exercise_ratio,
                                           t.price_per_kwh) for t in self.config.tariffs}

    def restore(self) -> None:
        """After a restart: open commitments, offers of slots not yet over, traded amounts."""
        now = self.clock()
        for commitment, progress, _ in self.store.open_commitments():
            self.control.add(commitment, progress)
            self._schedule_tick_at(commitment.window_end)
        self.offers = {o.id: o for o in self.store.offers_since(now)}
        self.traded_kwh = self.store.traded_kwh_by_offer()

    # -- inbound ----------------------------------------------------------------------------
    async def handle(self, message: Inbound, topic_suffix: str) -> None:
        topic_type = INBOUND_TYPES[topic_suffix]
        now = self.clock()
        msg_id = peek_id(message.payload)
        offer_id: str | None = None
        duplicate_of: str | None = None
        try:
            request = parse_inbound(topic_type, message.payload)
        except MessageRejected as exc:
            admission = Admission.reject(exc.reason)
        else:
            earlier = self.store.earlier_acceptance(request.id)
            if earlier is not None:
                status, duplicate_of, when = earlier
                admission = Admission(
                    AckStatus.DUPLICATE,
                    f"id {request.id!r} was already {status} at {iso(when)} "
                    f"as commitment {duplicate_of}")
            elif isinstance(request, TradeRequest):
                offer_id = request.offer_id
                admission = admit_trade(
                    request,
                    market_enabled=self.config.balancing.enable_balancing_market,
                    registry=self.config.asset_registry, offers=self.offers,
                    traded_kwh=self.traded_kwh, assets=self.control.asset_states(now),
                    ledger=self.control.ledger(), slot_seconds=self.config.slot_seconds,
                    now=now)
            else:
                admission = admit_control(
                    request, orders=self.orders, assets=self.control.asset_states(now),
                    ledger=self.control.ledger(), slot_seconds=self.config.slot_seconds,
                    now=now)
        commitment = admission.commitment
        commitment_id = commitment.id if commitment else duplicate_of
        with self.store.transaction():
            self.store.record_inbound(
                msg_id=msg_id, topic=message.topic, msg_type=topic_type, received_ts=now,
                payload=message.payload, status=admission.status.value,
                reason=admission.reason, commitment_id=commitment_id)
            if commitment is not None:
                self.store.save_commitment(commitment, offer_id, now)
            self.outbox.put("market/ack", ack(
                ref=msg_id, ref_type=topic_type, status=admission.status,
                reason=admission.reason, commitment_id=commitment_id,
                accepted_kwh=commitment.accepted_kwh if commitment else None))
        if admission.status is AckStatus.REJECTED:
            log.info("rejected %s %s: %s", topic_type, msg_id, admission.reason)
        if commitment is not None:
            if offer_id is not None:
                self.traded_kwh[offer_id] = (self.traded_kwh.get(offer_id, 0.0)
                                             + abs(commitment.requested_kwh))
            self.control.add(commitment)
            self._schedule_tick_at(commitment.window_end)
            await self.control.dispatch_now(commitment.assets, cause=commitment.id)
        self.outbox.flush()

    # -- outbound -----------------------------------------------------------------------------
    def slot_bounds(self, now: float) -> tuple[float, float]:
        length = self.config.slot_seconds
        start = now - (now % length)
        return start, start + length

    def publish_offers(self) -> list[Offer]:
        """The D3A offers of every registered battery for the current slot."""
        balancing = self.config.balancing
        if not balancing.enable_balancing_market:
            return []
        now = self.clock()
        slot_start, slot_end = self.slot_bounds(now)
        states = self.control.asset_states(now)
        committed_ledger = self.control.ledger()
        offers: list[Offer] = []
        for asset, rates in self.config.asset_registry.items():
            state = states.get(asset)
            if state is None or not state.available or state.soc is None:
                log.info("no offers for %s: no fresh telemetry", asset)
                continue
            committed = committed_on(asset, committed_ledger.commitments,
                                     committed_ledger.progress, now)
            offers += battery_offers(
                site=self.config.site, limits=state.limits, soc=state.soc,
                rules=OfferRules(balancing.balancing_offer_demand_ratio,
                                 balancing.balancing_offer_supply_ratio,
                                 rates.demand_rate_ct_per_kwh, rates.supply_rate_ct_per_kwh),
                slot_start=slot_start, slot_end=slot_end, now=now,
                committed_up_kwh=committed.up_kwh, committed_down_kwh=committed.down_kwh)
        fresh = [o for o in offers if o.id not in self.offers]
        with self.store.transaction():
            self.store.save_offers(fresh, now)
            for offer in fresh:
                self.outbox.put("market/balancing-offer", balancing_offer(offer))
        self.offers = {i: o for i, o in self.offers.items() if o.slot_end > now}
        self.offers.update((o.id, o) for o in fresh)
        self.outbox.flush()
        return fresh

    def publish_orders(self) -> None:
        """Each tariff's standing order, retained: in effect until replaced."""
        now = self.clock()
        with self.store.transaction():
            for order in self.orders.values():
                key = f"{order.tariff_id}:{order.exercise_ratio}:{order.price_per_kwh}"
                msg_id = "bo-" + hashlib.sha1(key.encode()).hexdigest()[:16]
                self.store.log_order(order.tariff_id, order.exercise_ratio,
                                     order.price_per_kwh, msg_id, now)
                self.outbox.put(
                    f"market/balancing-order/{order.tariff_id}",
                    balancing_order(order.tariff_id, order.exercise_ratio,
                                    order.price_per_kwh, msg_id),
                    retain=True)
        self.outbox.flush()
