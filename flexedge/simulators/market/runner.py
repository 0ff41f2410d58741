"""`flexedge market`: play a scenario of both markets against a running site over MQTT.

One MQTT client plays the D3A balancing agent (flexedge.simulators.market.d3a, or gsy-e's own
market and agent with `engine="gsy-e"`: flexedge.simulators.market.gsy_engine) and the Power TAC
distribution utility (flexedge.simulators.market.powertac) against the site's wire contract v1. It
watches offers and standing orders, publishes the scenario's spot trades, the balancing trades
that follow them, control events and economic controls, collects acks and delivery reports
(flexedge.simulators.market.ledger) and, once the last window is over and its reports are in (or a
grace has passed), prints the settlement and a scorecard.

Exit status: 0 when every commitment got its delivery report, 1 when one is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flexedge.config.loader import Site
from flexedge.contract.messages import SpotTradeMsg, moment
from flexedge.contract.wire import dump, iso
from flexedge.errors import FlexedgeError
from flexedge.mqtt import Inbound, MqttLink
from flexedge.simulators.devices.fault_client import send_fault
from flexedge.simulators.devices.faults import FaultState, updated
from flexedge.simulators.market.d3a import parse_offer, trade_message
from flexedge.simulators.market.engines import d3a_engine
from flexedge.simulators.market.ledger import Ledger, Sent, scorecard_table, settlement_table
from flexedge.simulators.market.powertac import (
    PAYMENT_RULE,
    Order,
    cover_imbalance,
    economic_message,
    imbalance_terms,
    order_capacity_kwh,
    take_order,
)
from flexedge.simulators.market.scenario import (
    EconomicControl,
    Fault,
    Imbalance,
    SpotTrade,
    TimedStep,
    load_scenario,
)

log = logging.getLogger(__name__)

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ONLINE_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 5.0
ORDERS_WAIT_S = 5.0
# Offers are published at the slot start; the agent clears no earlier than this into the slot
# so that a spot trade at second 0 still meets the whole order book.
OFFERS_SETTLE_S = 2.0
# ... and no earlier than this after the spot trade: gsy-e's load answers its own spot trade
# with a curtailment offer, which the agent can then buy in the same clearing.
REACT_S = 1.0
ORDER_PREFIX = "market/balancing-order/"


def resolve_scenario(text: str) -> Path:
    """A path, or the name of a bundled scenario (scenarios/NAME.yaml beside this file)."""
    path = Path(text)
    bundled = SCENARIOS / f"{text}.yaml"
    return bundled if not path.exists() and bundled.exists() else path


class MarketSim:
    def __init__(
        self,
        site: Site,
        steps: list[TimedStep],
        *,
        grace_s: float,
        say: Callable[[str], None],
        engine: str = "builtin",
    ) -> None:
        cfg = site.config
        self.cfg = cfg
        self.steps = steps
        self.grace_s = grace_s
        self.say = say
        self.slot_s = float(cfg.slot_seconds)
        self.base = f"{cfg.mqtt.prefix}/{cfg.site}"
        self.link = MqttLink.for_broker(
            cfg.mqtt.broker(), client_id=f"flexedge-market-{uuid.uuid4().hex[:8]}"
        )
        self.agent = d3a_engine(engine, cfg)
        self.orders: dict[str, Order] = {}  # by "{tariff}/{up|down}", one per direction
        self.ledger = Ledger()
        self._online = asyncio.Event()

    async def run(self) -> Ledger:
        await self.link.start()
        for suffix in (
            "market/balancing-offer",
            f"{ORDER_PREFIX}+/+",
            "market/ack",
            "market/delivery",
            "status",
        ):
            self.link.subscribe(f"{self.base}/{suffix}", qos=1)
        await self.link.wait_subscribed()
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            try:
                await asyncio.wait_for(self._online.wait(), ONLINE_TIMEOUT_S)
            except TimeoutError:
                raise FlexedgeError(
                    f"site {self.cfg.site!r} did not report online on "
                    f"{self.base}/status within {ONLINE_TIMEOUT_S:g} s"
                ) from None
            await self._wait_for_orders()
            # Slot 0 is the next whole slot: its offers are published (not retained) at its
            # start, which we are now subscribed early enough to see.
            t0 = (time.time() // self.slot_s + 1) * self.slot_s
            self.say(
                f"site online, {len(self.orders)} standing order(s); slot 0 starts "
                f"{iso(t0)} ({self.slot_s:g} s slots)"
            )
            self.say(f"Power TAC payment rule: {PAYMENT_RULE}")
            if not self.cfg.balancing.enable_balancing_market:
                self.say(
                    "the site's balancing market is disabled: expect no offers and "
                    "every balancing trade rejected"
                )
            for step in self.steps:
                await _sleep_until(t0 + step.offset_s)
                await self._play(step, t0 + step.slot * self.slot_s)
            deadline = self.ledger.last_window_end() + self.grace_s
            self.say(f"steps done; waiting for reports until {iso(deadline)}")
            await self.ledger.wait_complete(deadline)
        finally:
            reader.cancel()
            await self.link.stop()
        return self.ledger

    async def _wait_for_orders(self) -> None:
        """The standing orders are retained, but a site that has just come online may still
        be publishing them; give it a moment so the first imbalance finds them."""
        expected = {f"{t.id}/{o.direction}" for t in self.cfg.tariffs for o in t.orders()}
        deadline = time.monotonic() + ORDERS_WAIT_S
        while not expected <= self.orders.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        missing = sorted(expected - self.orders.keys())
        if missing:
            log.warning("no standing order seen for tariff(s) %s", ", ".join(missing))

    # -- inbound --------------------------------------------------------------------------
    async def _read(self) -> None:
        prefix = self.base + "/"
        while True:
            message: Inbound = await self.link.inbound.get()
            self.link.ack(message)
            suffix = message.topic.removeprefix(prefix)
            if suffix.startswith(ORDER_PREFIX):
                note = take_order(self.orders, suffix.removeprefix(ORDER_PREFIX), message.payload)
                if note:
                    self.say(note)
                continue
            try:
                body = json.loads(message.payload)
            except ValueError:
                log.warning("ignoring a non-JSON message on %s", message.topic)
                continue
            if isinstance(body, dict):
                self._dispatch(suffix, body)

    def _dispatch(self, suffix: str, body: Mapping[str, Any]) -> None:
        if suffix == "market/balancing-offer":
            offer = parse_offer(body)
            refused = None if offer is None else self.agent.add_offer(offer)
            if refused:
                log.warning("the balancing market refused offer %s: %s", body.get("id"), refused)
        elif suffix == "market/ack":
            self.ledger.on_ack(body)
        elif suffix == "market/delivery":
            self.ledger.on_report(body)
        elif suffix == "status":
            if body.get("state") == "online":
                self._online.set()
            else:
                log.warning("site %s is %s", self.cfg.site, body.get("state"))

    # -- outbound -------------------------------------------------------------------------
    def _send(self, topic_suffix: str, payload: dict[str, Any], sent: Sent) -> None:
        self.ledger.record(sent)
        data = json.dumps(payload).encode()
        if self.link.publish(f"{self.base}/{topic_suffix}", data, qos=1) is None:
            # Recorded anyway: its missing ack then shows in the scorecard and the exit code.
            log.error("not connected: %s %s was not sent", payload["type"], payload["id"])

    async def _play(self, step: TimedStep, slot_start: float) -> None:
        if step.note:
            self.say(f"step {step.index}: {step.note}")
        action = step.action
        if isinstance(action, SpotTrade):
            await self._spot_trade(step.index, action, slot_start)
        elif isinstance(action, Imbalance):
            await self._imbalance(step.index, action, slot_start)
        elif isinstance(action, EconomicControl):
            self._economic(step.index, action, slot_start)
        elif isinstance(action, Fault):
            await self._fault(action)

    async def _spot_trade(self, index: int, trade: SpotTrade, slot_start: float) -> None:
        slot_end = slot_start + self.slot_s
        msg = dump(
            SpotTradeMsg(
                v=1,
                id=f"st-{uuid.uuid4().hex[:16]}",
                asset=trade.asset,
                slot_start=moment(slot_start),
                energy_kwh=trade.energy_kwh,
                side=trade.side,
                rate_ct_per_kwh=trade.rate,
            )
        )
        # Site sign convention: selling is injection (+), buying consumption (-).
        signed = trade.energy_kwh if trade.side == "sell" else -trade.energy_kwh
        self._send(
            "market/spot-trade",
            msg,
            Sent(
                msg["id"],
                "spot_trade",
                "d3a",
                index,
                trade.asset,
                signed,
                round(trade.rate * trade.energy_kwh, 6),
                slot_end,
            ),
        )
        self.say(
            f"spot trade {msg['id']}: {trade.asset} {trade.side}s "
            f"{trade.energy_kwh:.4f} kWh at {trade.rate} ct/kWh"
        )
        await _sleep_until(max(slot_start + OFFERS_SETTLE_S, time.time() + REACT_S))
        self.agent.forget_before(slot_start)
        clearing = self.agent.follow_spot_trade(trade.energy_kwh, trade.side, slot_start)
        if clearing is None:
            self.say("  the balancing agent follows only spot trades the site buys")
            return
        for fill in clearing.fills:
            payload = trade_message(fill)
            self._send(
                "market/balancing-trade",
                payload,
                Sent(
                    payload["id"],
                    "balancing_trade",
                    "d3a",
                    index,
                    f"{fill.offer.asset} {'up' if fill.energy_kwh > 0 else 'down'} offer",
                    fill.energy_kwh,
                    fill.price_ct,
                    slot_end,
                ),
            )
            rest = f", the rest is {fill.residual.id}" if fill.residual else ""
            self.say(
                f"  balancing trade {payload['id']}: {fill.energy_kwh:+.4f} kWh of "
                f"{fill.offer.id} at {fill.offer.rate_ct_per_kwh} ct/kWh{rest}"
            )
        if clearing.unmet_up_kwh > 0 or clearing.unmet_down_kwh > 0:
            self.say(
                f"  not on offer: {clearing.unmet_up_kwh:.4f} kWh up, "
                f"{clearing.unmet_down_kwh:.4f} kWh down (carried to the next spot trade)"
            )

    async def _imbalance(self, index: int, imbalance: Imbalance, slot_start: float) -> None:
        slot_end = slot_start + self.slot_s
        now = time.time()
        terms = imbalance_terms(self.orders, imbalance)
        orders = terms.orders
        capacity = {t: order_capacity_kwh(self.cfg, o, now, slot_end) for t, o in orders.items()}
        self.say(terms.summary)

        async def send(payload: dict[str, Any]) -> Mapping[str, Any] | None:
            self._send(
                "market/balancing-control",
                payload,
                Sent(
                    payload["id"],
                    "balancing_control",
                    "powertac",
                    index,
                    payload["tariff_id"],
                    payload["kwh"],
                    payload["payment"],
                    slot_end,
                ),
            )
            ack = await self.ledger.wait_ack(payload["id"], ACK_TIMEOUT_S)
            self.say(
                f"  control event {payload['id']}: {payload['kwh']:+.4f} kWh on "
                f"{payload['tariff_id']}, payment {payload['payment']} -> "
                f"{ack.get('status') if ack else 'no ack'}"
            )
            return ack

        left = await cover_imbalance(
            orders,
            imbalance.kwh,
            capacity,
            send,
            slot_start,
            tariff=imbalance.tariff,
            payment_per_kwh=terms.payment_per_kwh,
            regulating_price=terms.regulating_price,
        )
        if left:
            self.say(f"  uncovered: {left:+.4f} kWh (no standing order with room left)")

    def _economic(self, index: int, control: EconomicControl, slot_start: float) -> None:
        payload = economic_message(control.tariff, slot_start, control.curtailment_ratio)
        self._send(
            "market/economic-control",
            payload,
            Sent(
                payload["id"],
                "economic_control",
                "powertac",
                index,
                control.tariff,
                None,
                0.0,
                slot_start + self.slot_s,
            ),
        )
        self.say(
            f"economic control {payload['id']}: curtail {control.tariff} by "
            f"{control.curtailment_ratio:.0%}"
        )

    async def _fault(self, fault: Fault) -> None:
        """Switch a simulator fault and wait for the simulator to confirm it."""
        cfg = self.cfg
        state = await send_fault(cfg.mqtt.broker(), cfg.site, fault.device, fault.message())
        if state is None:
            raise FlexedgeError(
                f"no simulator confirmed the fault on {fault.device}: is `flexedge sim --mqtt "
                f"{cfg.mqtt.host}:{cfg.mqtt.port}` running for site {cfg.site!r}?"
            )
        if "error" in state:
            raise FlexedgeError(
                f"the simulator refused the fault on {fault.device}: {state['error']}"
            )
        self.say(f"fault on {fault.device}: {updated(FaultState(), state).describe()}")


async def _sleep_until(ts: float) -> None:
    await asyncio.sleep(max(0.0, ts - time.time()))


def run_market(
    site: Site, scenario_arg: str, *, grace_s: float | None = None, engine: str = "builtin"
) -> int:
    """Play the scenario, print settlement and scorecard; 0 if every report came, else 1."""
    path = resolve_scenario(scenario_arg)
    scenario, steps = load_scenario(path, site.config)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)

    # The site reports a window a few control periods after it closes at the latest.
    grace = grace_s if grace_s is not None else 5.0 + 3 * site.config.control_period_s
    say(
        f"scenario {scenario.name!r} ({len(steps)} steps) against site {site.config.site!r} "
        f"on {site.config.mqtt.host}:{site.config.mqtt.port}"
    )
    market = MarketSim(site, steps, grace_s=grace, say=say, engine=engine)
    say(f"D3A balancing market: {engine}")
    ledger = asyncio.run(market.run())
    print("\nSettlement (pay-as-offer, capped at the accepted energy)\n" + settlement_table(ledger))
    print("\nScorecard\n" + scorecard_table(ledger), flush=True)
    return 0 if ledger.complete() else 1
