"""Operator commands over MQTT v5 request/response (`cmd/{command}`), used by the CLI."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from flexedge.contract.messages import SetOrderRequest
from flexedge.contract.wire import command_reply, iso
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.errors import message_reason
from flexedge.mqtt import Inbound, MqttLink

log = logging.getLogger(__name__)


class CommandHandler:
    """Answers operator commands from the parts of the shell it is handed."""

    def __init__(
        self,
        *,
        site: str,
        control: ControlLoop,
        market: MarketDesk,
        store: Store,
        outbox: Outbox,
        link: MqttLink,
        clock: Callable[[], float],
        daemon_state: Callable[[], str],
    ) -> None:
        self.site = site
        self.control = control
        self.market = market
        self.store = store
        self.outbox = outbox
        self.link = link
        self.clock = clock
        self.daemon_state = daemon_state

    async def handle(self, message: Inbound, command: str) -> None:
        if message.response_topic is None:
            log.info("command %s without a response topic ignored", command)
            return
        if command == "status":
            body = self.status()
        elif command == "set-order":
            body = self.set_order(message.payload)
        else:
            body = {"ok": False, "error": f"unknown command {command!r}; known: status, set-order"}
        self.link.publish(
            message.response_topic,
            command_reply(command, body),
            qos=1,
            correlation_data=message.correlation_data,
        )

    def set_order(self, payload: bytes) -> dict[str, Any]:
        """Replace a tariff's standing order; it is re-published (retained) at once."""
        try:
            request = SetOrderRequest.model_validate_json(payload)
        except ValidationError as exc:
            return self._refuse(payload, message_reason(exc, name_missing=False, show_input=False))
        current = self.market.policy(request.tariff_id)
        if current is None:
            return self._refuse(payload, f"unknown tariff {request.tariff_id!r}")
        if request.exercise_ratio == 0:
            return self._refuse(payload, "exercise_ratio 0 offers nothing; use [-1, 0) or (0, 2]")
        self.market.set_policy(
            replace(
                current,
                exercise_ratio=request.exercise_ratio,
                price_per_kwh=(
                    current.price_per_kwh
                    if request.price_per_kwh is None
                    else request.price_per_kwh
                ),
            )
        )
        self.market.refresh_orders()
        self.store.log_event(self.clock(), "set-order", payload.decode("utf-8", "replace"))
        policy = self.market.policy(request.tariff_id)
        assert policy is not None  # set just above
        live = self.market.order_in_force(request.tariff_id)
        return {
            "ok": True,
            "tariff_id": policy.tariff_id,
            "exercise_ratio": policy.exercise_ratio,
            "price_per_kwh": policy.price_per_kwh,
            "published_ratio": live.exercise_ratio if live else None,
        }

    def _refuse(self, payload: bytes, reason: str) -> dict[str, Any]:
        self.store.log_event(
            self.clock(),
            "command-rejected",
            f"{reason}: {payload.decode('utf-8', 'replace')[:500]}",
        )
        return {"ok": False, "error": reason}

    def status(self) -> dict[str, Any]:
        now = self.clock()
        commitments = []
        for c, progress in self.control.commitments_in_progress():
            commitments.append(
                {
                    "id": c.id,
                    "ref_type": c.ref_type.value,
                    "window_start": iso(c.window_start),
                    "window_end": iso(c.window_end),
                    "accepted_kwh": c.accepted_kwh,
                    "delivered_kwh": round(progress.delivered_kwh, 6),
                }
            )
        return {
            "ok": True,
            "site": self.site,
            "state": self.daemon_state(),
            "ts": iso(now),
            "assets": self.control.summary(now),
            "open_commitments": commitments,
            "outbox_backlog": self.outbox.backlog(),
            "log_db": str(self.store.path),
            "orders": [
                {
                    "tariff_id": o.tariff_id,
                    "exercise_ratio": o.exercise_ratio,
                    "price_per_kwh": o.price_per_kwh,
                }
                for o in self.market.orders_in_force()
            ],
        }


def render_status(body: dict[str, Any]) -> str:
    """Human-readable status for the CLI."""
    if not body.get("ok"):
        return f"error: {body.get('error')}"
    lines = [
        f"site {body['site']}: {body['state']} at {body['ts']}",
        f"log: {body['log_db']}  outbox backlog: {body['outbox_backlog']}",
        "assets:",
    ]
    for name, a in body["assets"].items():
        lines.append(
            f"  {name:<16} p={a['p_kw']} kW soc={a['soc']} "
            f"available={a['available']} setpoint={a['setpoint_kw']}"
        )
    lines.append(f"open commitments: {len(body['open_commitments'])}")
    for c in body["open_commitments"]:
        lines.append(
            f"  {c['id']} {c['ref_type']} {c['window_start']}..{c['window_end']} "
            f"{c['delivered_kwh']}/{c['accepted_kwh']} kWh"
        )
    return "\n".join(lines) + "\n" + json.dumps({"orders": body["orders"]})
