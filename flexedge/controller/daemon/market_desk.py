"""The market side of the shell: inbound messages to acks and commitments, offers and orders out.

Every inbound message gets exactly one ack. The inbound row, the commitment and the ack are
written in one transaction before anything is published, so nothing acknowledged is lost. The
ack's id is derived from the message's topic and bytes: a message delivered again gets the same
ack again (a receiver drops the repeat), and another message reusing an accepted id is acked
`duplicate` under an id of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flexedge.config.loader import Site
from flexedge.contract.wire import (
    INBOUND_TYPES,
    ack,
    ack_id,
    balancing_offer,
    iso,
    parse_inbound,
    peek_id,
)
from flexedge.controller.core.admission import AssetState
from flexedge.controller.core.capability import Committed, committed_on
from flexedge.controller.core.control_admission import (
    PRECEDENCE,
    EconomicControl,
    admit_control,
    admit_economic_control,
)
from flexedge.controller.core.model import AckStatus, Admission, Offer
from flexedge.controller.core.offers import (
    OfferRules,
    battery_offers,
    generator_offers,
    load_offers,
    load_supply_after_spot_trade,
)
from flexedge.controller.core.plausibility import request_problem
from flexedge.controller.core.residuals import live_residuals, record_trade, root_offer
from flexedge.controller.core.trade_admission import (
    SpotTrade,
    TradeRequest,
    admit_spot_trade,
    admit_trade,
)
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.standing_orders import StandingOrders
from flexedge.controller.daemon.store import Store
from flexedge.errors import MessageRejected
from flexedge.mqtt import Inbound

log = logging.getLogger(__name__)


class MarketDesk:
    def __init__(
        self,
        site: Site,
        control: ControlLoop,
        store: Store,
        outbox: Outbox,
        clock: Callable[[], float],
        schedule_tick_at: Callable[[float], None],
    ) -> None:
        self.site = site
        self.config = site.config
        self.limits = site.config.limits.plausibility()
        self.control = control
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self._schedule_tick_at = schedule_tick_at
        self.offers: dict[str, Offer] = {}
        # What the market took of each offer, by the id the site published it under, and the
        # residual ids partial trades announced for the rest (residual id -> that offer id).
        self.traded_kwh: dict[str, float] = {}
        self.residuals: dict[str, str] = {}
        # The asset registry as the core takes it; the site file does not change while we run.
        self.registry = self.config.registry_rates()
        # The Power TAC side: the tariffs' standing orders, configured and in force.
        self.standing = StandingOrders(site, control, store, outbox, clock)
        # While the operator has paused the site (or put it in its safe state): why every new
        # market message is rejected, and no offer goes out.
        self.refusing: str | None = None

    def restore(self) -> None:
        """After a restart: open commitments, offers of slots not yet over, traded amounts."""
        now = self.clock()
        for commitment, progress, _ in self.store.open_commitments():
            if commitment.window_start > now + self.limits.horizon_s:
                # A log from before the limits may hold a window in the year 9999: it is no
                # commitment any market made, and it would break status and report.
                with self.store.transaction():
                    self.store.drop_commitment(commitment.id, "beyond limits.horizon_s", now)
                log.warning(
                    "commitment %s dropped: its window is beyond the horizon", commitment.id
                )
                continue
            self.control.add(commitment, progress)
            self._schedule_tick_at(commitment.window_end)
        self.offers = {o.id: o for o in self.store.offers_since(now)}
        self.traded_kwh = self.store.traded_kwh_by_offer()
        self.residuals = live_residuals(self.store.residual_offer_ids(), self.offers)

    # -- inbound ----------------------------------------------------------------------------
    async def handle(self, message: Inbound, topic_suffix: str) -> None:
        topic_type = INBOUND_TYPES[topic_suffix]
        now = self.clock()
        msg_id = peek_id(message.payload)
        answer_id = ack_id(message.topic, message.payload)
        earlier_ack = self.store.earlier_ack(answer_id)
        if earlier_ack is not None:
            self._answer_again(message, topic_type, msg_id, earlier_ack, now)
            return
        offer_id: str | None = None
        residual_id: str | None = None
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
                    f"id {request.id!r} was already {status} at {iso(when)}"
                    + (f" as commitment {duplicate_of}" if duplicate_of else ""),
                )
            elif self.refusing is not None:
                admission = Admission.reject(self.refusing)
            elif (problem := request_problem(request, self.limits, now)) is not None:
                admission = Admission.reject(problem)
            elif isinstance(request, SpotTrade):
                admission = admit_spot_trade(
                    request,
                    market_enabled=self.config.balancing.enable_balancing_market,
                    registry=self.registry,
                    slot_seconds=self.config.slot_seconds,
                    now=now,
                    devices=self.control.assets,
                )
            elif isinstance(request, TradeRequest):
                root = root_offer(request.offer_id, self.offers, self.residuals)
                offer_id = root.id if root is not None else request.offer_id
                residual_id = request.residual_offer_id
                admission = admit_trade(
                    request,
                    market_enabled=self.config.balancing.enable_balancing_market,
                    registry=self.registry,
                    offers=self.offers,
                    traded_kwh=self.traded_kwh,
                    assets=self.control.asset_states(now),
                    ledger=self.control.ledger(),
                    slot_seconds=self.config.slot_seconds,
                    now=now,
                    cover_with_other_assets=self.config.balancing.cover_with_other_assets,
                    residuals=self.residuals,
                )
            elif isinstance(request, EconomicControl):
                admission = admit_economic_control(
                    request,
                    tariffs=self.standing.tariff_assets,
                    assets=self.control.asset_states(now),
                    ledger=self.control.ledger(),
                    slot_seconds=self.config.slot_seconds,
                    now=now,
                )
            else:
                admission = admit_control(
                    request,
                    orders=self.standing.orders,
                    assets=self.control.asset_states(now),
                    ledger=self.control.ledger(),
                    slot_seconds=self.config.slot_seconds,
                    now=now,
                )
        commitment = admission.commitment
        commitment_id = commitment.id if commitment else duplicate_of
        with self.store.transaction():
            self.store.record_inbound(
                msg_id=msg_id,
                topic=message.topic,
                msg_type=topic_type,
                received_ts=now,
                payload=message.payload,
                status=admission.status.value,
                reason=admission.reason,
                commitment_id=commitment_id,
                ack_id=answer_id,
            )
            if commitment is not None:
                self.store.save_commitment(commitment, offer_id, now, residual_id)
            self.outbox.put(
                "market/ack",
                ack(
                    id=answer_id,
                    ref=msg_id,
                    ref_type=topic_type,
                    status=admission.status,
                    reason=admission.reason,
                    commitment_id=commitment_id,
                    accepted_kwh=commitment.accepted_kwh if commitment else None,
                ),
            )
        if admission.status is AckStatus.REJECTED:
            log.info("rejected %s %s: %s", topic_type, msg_id, admission.reason)
        elif isinstance(request, EconomicControl) and PRECEDENCE in admission.reason:
            log.warning("%s %s %s: %s", topic_type, msg_id, admission.status, admission.reason)
        if commitment is not None:
            if offer_id is not None:
                self.traded_kwh, self.residuals = record_trade(
                    offer_id, commitment.requested_kwh, residual_id, self.traded_kwh, self.residuals
                )
            self.control.add(commitment)
            self._schedule_tick_at(commitment.window_end)
            self.control.dispatch_soon(commitment)
        if admission.status is AckStatus.ACCEPTED and isinstance(request, SpotTrade):
            self._offers_after_spot_trade(request, now)
        self.outbox.flush()

    def _answer_again(
        self, message: Inbound, topic_type: str, msg_id: str | None, earlier: bytes, now: float
    ) -> None:
        """The same bytes on the same topic again: the broker redelivers a message it had no
        PUBACK for when the daemon died. It was decided and answered then, so it gets that ack
        again, unchanged and under its id, and is not decided anew (which could commit twice,
        or answer differently under the same ack id)."""
        answer = json.loads(earlier)
        with self.store.transaction():
            self.store.record_inbound(
                msg_id=msg_id,
                topic=message.topic,
                msg_type=topic_type,
                received_ts=now,
                payload=message.payload,
                status=answer["status"],
                reason=answer["reason"],
                commitment_id=answer["commitment_id"],
                ack_id=answer["id"],
            )
            self.outbox.put("market/ack", answer)
        log.info("%s %s delivered again: ack %s sent again", topic_type, msg_id, answer["id"])
        self.outbox.flush()

    def _offers_after_spot_trade(self, trade: SpotTrade, now: float) -> None:
        """A flexible load that bought energy offers to curtail part of it (gsy-e's rule)."""
        state = self.control.asset_states(now).get(trade.asset)
        if (
            trade.side != "buy"
            or not self.config.balancing.enable_balancing_market
            or state is None
            or state.kind != "flexible_load"
            or not self.config.balancing.balancing_flexible_loads_support
        ):
            return
        if state.headroom is None:
            log.info(
                "no offer after spot trade %s: %s has no fresh telemetry", trade.id, trade.asset
            )
            return
        slot_end = trade.slot_start + self.config.slot_seconds
        self._publish(
            load_supply_after_spot_trade(
                site=self.config.site,
                asset=trade.asset,
                trade_id=trade.id,
                bought_kwh=trade.energy_kwh,
                headroom=state.headroom,
                rules=self._rules(trade.asset),
                slot_start=trade.slot_start,
                slot_end=slot_end,
                now=now,
                committed=self._committed(trade.asset, now),
            ),
            now,
        )

    # -- outbound -----------------------------------------------------------------------------
    def slot_bounds(self, now: float) -> tuple[float, float]:
        length = self.config.slot_seconds
        start = now - (now % length)
        return start, start + length

    def publish_offers(self) -> list[Offer]:
        """At slot start: the D3A offers of every registered asset for the current slot."""
        if not self.config.balancing.enable_balancing_market:
            return []
        if self.refusing is not None:
            log.info("no offers: %s", self.refusing)
            return []
        now = self.clock()
        slot_start, slot_end = self.slot_bounds(now)
        states = self.control.asset_states(now)
        offers: list[Offer] = []
        for asset in self.config.asset_registry:
            state = states.get(asset)
            if state is None or state.headroom is None:
                log.info("no offers for %s: no fresh telemetry", asset)
                continue
            offers += self._slot_offers(asset, state, slot_start, slot_end, now)
        return self._publish(offers, now)

    def _slot_offers(
        self, asset: str, state: AssetState, slot_start: float, slot_end: float, now: float
    ) -> list[Offer]:
        assert state.headroom is not None
        rules = self._rules(asset)
        committed = self._committed(asset, now)
        if state.kind == "battery" and state.limits is not None and state.soc is not None:
            return battery_offers(
                site=self.config.site,
                limits=state.limits,
                soc=state.soc,
                rules=rules,
                slot_start=slot_start,
                slot_end=slot_end,
                now=now,
                committed=committed,
            )
        if state.kind == "flexible_load":
            return load_offers(
                site=self.config.site,
                asset=asset,
                demand_kw=-self.control.assets[asset].baseline_kw(now),
                headroom=state.headroom,
                rules=rules,
                slot_start=slot_start,
                slot_end=slot_end,
                now=now,
                committed=committed,
            )
        return generator_offers(
            site=self.config.site,
            asset=asset,
            headroom=state.headroom,
            rules=rules,
            slot_start=slot_start,
            slot_end=slot_end,
            now=now,
            committed=committed,
        )

    def _rules(self, asset: str) -> OfferRules:
        balancing = self.config.balancing
        rates = self.config.asset_registry[asset]
        return OfferRules(
            balancing.balancing_offer_demand_ratio,
            balancing.balancing_offer_supply_ratio,
            rates.demand_rate_ct_per_kwh,
            rates.supply_rate_ct_per_kwh,
        )

    def _committed(self, asset: str, now: float) -> Committed:
        ledger = self.control.ledger()
        return committed_on(asset, ledger.commitments, ledger.progress, now)

    def _publish(self, offers: list[Offer], now: float) -> list[Offer]:
        """Log and send the offers not sent before; forget those of slots that are over."""
        fresh = [o for o in offers if o.id not in self.offers]
        with self.store.transaction():
            self.store.save_offers(fresh, now)
            for offer in fresh:
                self.outbox.put("market/balancing-offer", balancing_offer(offer))
        self.offers = {i: o for i, o in self.offers.items() if o.slot_end > now}
        self.offers.update((o.id, o) for o in fresh)
        self.residuals = live_residuals(self.residuals, self.offers)
        self.outbox.flush()
        return fresh
