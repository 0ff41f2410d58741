"""A scripted market client over MQTT, shared by the demo, the latency benchmark and tests.

It speaks the wire contract from the market's side: it watches offers, acks and reports,
and sends spot trades, balancing trades and control events, built from the contract's models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import datetime
from typing import Any, Literal

from flexedge.contract.messages import (
    BalancingControlMsg,
    BalancingTradeMsg,
    EconomicControlMsg,
    SpotTradeMsg,
    moment,
)
from flexedge.contract.wire import dump
from flexedge.mqtt import Broker, Inbound, MqttLink


class MarketClient:
    def __init__(
        self,
        host: str,
        port: int,
        prefix: str,
        site: str,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """`username`, `password`: the market's own login, on a broker with accounts."""
        self.base = f"{prefix}/{site}"
        self.link = MqttLink.for_broker(
            Broker(host, port, username, password), client_id=f"market-{uuid.uuid4().hex[:8]}"
        )
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.start()
        for suffix in (
            "market/ack",
            "market/delivery",
            "market/measurement",
            "market/balancing-offer",
            "market/balancing-order/+/+",
            "status",
        ):
            self.link.subscribe(f"{self.base}/{suffix}", qos=1)
        await self.link.wait_subscribed()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
        await self.link.stop()

    async def _read(self) -> None:
        while True:
            message: Inbound = await self.link.inbound.get()
            self.link.ack(message)
            if not message.payload:  # an empty retained message clears its topic
                self.seen.append({"_topic": message.topic, "_cleared": True})
                self._changed.set()
                continue
            try:
                body = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(body, dict):
                body["_topic"] = message.topic
                self.seen.append(body)
                self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """The first message (seen before or arriving) for which predicate(msg) is true."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for message in self.seen[checked:]:
                if predicate(message):
                    return message
            checked = len(self.seen)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("market: expected message did not arrive in time")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def ack_for(self, ref: str, timeout: float = 10.0) -> Any:
        return self.wait_for(lambda m: m.get("type") == "ack" and m.get("ref") == ref, timeout)

    def report_for(self, commitment_id: str, timeout: float) -> Any:
        return self.wait_for(
            lambda m: (
                m.get("type") == "delivery_report" and m.get("commitment_id") == commitment_id
            ),
            timeout,
        )

    def send(self, topic_suffix: str, payload: dict[str, Any] | bytes) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if self.link.publish(f"{self.base}/{topic_suffix}", data, qos=1) is None:
            raise ConnectionError("market client is not connected")

    def trade(self, offer: dict[str, Any], energy_kwh: float, msg_id: str | None = None) -> str:
        msg_id = msg_id or f"trade-{uuid.uuid4().hex[:12]}"
        self.send(
            "market/balancing-trade",
            dump(
                BalancingTradeMsg(
                    v=1,
                    id=msg_id,
                    offer_id=offer["id"],
                    asset=offer["asset"],
                    slot_start=datetime.fromisoformat(offer["slot_start"]),
                    energy_kwh=energy_kwh,
                    price_ct=round(offer["rate_ct_per_kwh"] * abs(energy_kwh), 6),
                )
            ),
        )
        return msg_id

    def control(
        self,
        tariff_id: str,
        timeslot_start: float,
        kwh: float,
        payment: float,
        msg_id: str | None = None,
    ) -> str:
        msg_id = msg_id or f"bce-{uuid.uuid4().hex[:12]}"
        self.send(
            "market/balancing-control",
            dump(
                BalancingControlMsg(
                    v=1,
                    id=msg_id,
                    tariff_id=tariff_id,
                    timeslot_start=moment(timeslot_start),
                    kwh=kwh,
                    payment=payment,
                )
            ),
        )
        return msg_id

    def spot_trade(
        self,
        asset: str,
        slot_start: float,
        energy_kwh: float,
        *,
        side: Literal["buy", "sell"] = "buy",
        rate_ct_per_kwh: float = 25.0,
        msg_id: str | None = None,
    ) -> str:
        msg_id = msg_id or f"sp-{uuid.uuid4().hex[:12]}"
        self.send(
            "market/spot-trade",
            dump(
                SpotTradeMsg(
                    v=1,
                    id=msg_id,
                    asset=asset,
                    slot_start=moment(slot_start),
                    energy_kwh=energy_kwh,
                    side=side,
                    rate_ct_per_kwh=rate_ct_per_kwh,
                )
            ),
        )
        return msg_id

    def economic_control(
        self, tariff_id: str, timeslot_start: float, ratio: float, msg_id: str | None = None
    ) -> str:
        msg_id = msg_id or f"ec-{uuid.uuid4().hex[:12]}"
        self.send(
            "market/economic-control",
            dump(
                EconomicControlMsg(
                    v=1,
                    id=msg_id,
                    tariff_id=tariff_id,
                    timeslot_start=moment(timeslot_start),
                    curtailment_ratio=ratio,
                )
            ),
        )
        return msg_id
