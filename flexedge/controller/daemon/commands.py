"""Operator commands over MQTT v5 request/response (`cmd/{command}`), used by the CLI."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from flexedge.contract.messages import SetOrderRequest
from flexedge.contract.operator import OPERATOR_REPLIES
from flexedge.contract.wire import command_reply, iso
from flexedge.controller.core.orders import (
    Direction,
    StandingOrder,
    direction_of_ratio,
    ratio_problem,
)
from flexedge.controller.core.plausibility import order_price_problem
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.operator import Operator, Refused
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.errors import StoreError, message_reason
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
        problems: Callable[[], list[str]] = list,
        operator: Operator | None = None,
    ) -> None:
        self.site = site
        self.control = control
        self.market = market
        self.store = store
        self.outbox = outbox
        self.link = link
        self.clock = clock
        self.daemon_state = daemon_state
        self.problems = problems
        self.operator = operator or Operator(control, market, store, clock)

    async def handle(self, message: Inbound, command: str) -> None:
        if message.response_topic is None:
            log.info("command %s without a response topic ignored", command)
            return
        body = await self.answer(command, message.payload)
        self.link.publish(
            message.response_topic,
            command_reply(command, body),
            qos=1,
            correlation_data=message.correlation_data,
        )

    async def answer(self, command: str, payload: bytes) -> dict[str, Any]:
        """The reply to one command; a refusal says why and changes nothing."""
        if command == "status":
            return self.status()
        if command == "set-order":
            return self.set_order(payload)
        if command not in OPERATOR_REPLIES:
            known = ", ".join(["status", "set-order", *OPERATOR_REPLIES])
            return {"ok": False, "error": f"unknown command {command!r}; known: {known}"}
        try:
            body = await self.operator.command(command, payload)
        except Refused as exc:
            return self._refuse(payload, f"{command}: {exc}")
        except StoreError as exc:
            return self._refuse(payload, f"{command}: nothing changed: {exc}")
        if command not in ("commitments", "devices", "reports"):  # the changes, not the reads
            self._log_event(f"operator-{command}", payload.decode("utf-8", "replace")[:500])
        return body

    def set_order(self, payload: bytes) -> dict[str, Any]:
        """A new order for a tariff (it replaces only the order of its own direction), or the
        withdrawal of one direction's order; it is re-published (or cleared) at once."""
        try:
            request = SetOrderRequest.model_validate_json(payload)
        except ValidationError as exc:
            return self._refuse(payload, message_reason(exc, name_missing=False, show_input=False))
        before = dict(self.market.standing.policies)
        try:
            return self._apply_order(request, payload)
        except StoreError as exc:
            # Not published, not logged: the operator is told, and the order stays as it was.
            self.market.standing.policies = before
            return self._refuse(payload, f"the order is unchanged: {exc}")

    def _apply_order(self, request: SetOrderRequest, payload: bytes) -> dict[str, Any]:
        standing = self.market.standing
        if request.tariff_id not in standing.policies:
            return self._refuse(payload, f"unknown tariff {request.tariff_id!r}")
        if request.withdraw is not None:
            direction: Direction = request.withdraw
            if request.exercise_ratio is not None:
                wrong = ratio_problem(request.exercise_ratio, direction)
                return self._refuse(
                    payload,
                    f"withdraw {direction}: {wrong or 'a withdraw takes no exercise_ratio'}",
                )
            missing = standing.withdraw_policy(request.tariff_id, direction)
            if missing:
                return self._refuse(payload, missing)
        elif request.exercise_ratio is None:
            return self._refuse(payload, "give exercise_ratio (a new order) or withdraw")
        else:
            bad_ratio = ratio_problem(request.exercise_ratio, request.direction)
            if bad_ratio:
                return self._refuse(payload, bad_ratio)
            direction = direction_of_ratio(request.exercise_ratio)
            current = standing.policy(request.tariff_id, direction)
            price = request.price_per_kwh
            bad_price = None if price is None else order_price_problem(price, self.market.limits)
            if bad_price:
                return self._refuse(payload, bad_price)
            if price is None and current is None:
                return self._refuse(
                    payload,
                    f"tariff {request.tariff_id!r} has no {direction} order yet: "
                    f"give price_per_kwh for it",
                )
            standing.set_policy(
                StandingOrder(
                    request.tariff_id,
                    standing.tariff_assets[request.tariff_id],
                    request.exercise_ratio,
                    price if price is not None else current.price_per_kwh if current else 0.0,
                )
            )
        standing.refresh_orders()
        try:
            self.operator.keep_orders()
        except StoreError:
            log.warning("set-order: published, but not kept for the next start")
        self._log_event("set-order", payload.decode("utf-8", "replace"))
        log.info("set-order: %s", payload.decode("utf-8", "replace")[:200])
        policy = standing.policy(request.tariff_id, direction)
        live = standing.order_in_force(request.tariff_id, direction)
        return {
            "ok": True,
            "tariff_id": request.tariff_id,
            "direction": direction,
            "exercise_ratio": policy.exercise_ratio if policy else None,
            "price_per_kwh": policy.price_per_kwh if policy else None,
            "published_ratio": live.exercise_ratio if live else None,
            "orders": [
                _summary(o) for o in standing.orders_in_force() if o.tariff_id == request.tariff_id
            ],
        }

    def _refuse(self, payload: bytes, reason: str) -> dict[str, Any]:
        log.info("command refused: %s", reason)
        self._log_event("command-rejected", f"{reason}: {payload.decode('utf-8', 'replace')[:500]}")
        return {"ok": False, "error": reason}

    def _log_event(self, kind: str, detail: str) -> None:
        # The audit line of a command; the command's answer does not wait on it.
        with contextlib.suppress(StoreError), self.store.transaction():
            self.store.log_event(self.clock(), kind, detail)

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
            "problems": self.problems(),
            "ts": iso(now),
            "assets": self.control.summary(now),
            "open_commitments": commitments,
            "outbox_backlog": self.outbox.backlog(),
            "log_db": str(self.store.path),
            "orders": [_summary(o) for o in self.market.standing.orders_in_force()],
            "holds": self.operator.holds(),
        }


def _summary(order: StandingOrder) -> dict[str, Any]:
    return {
        "tariff_id": order.tariff_id,
        "direction": order.direction,
        "exercise_ratio": order.exercise_ratio,
        "price_per_kwh": order.price_per_kwh,
    }


def render_status(body: dict[str, Any]) -> str:
    """Human-readable status for the CLI."""
    if not body.get("ok"):
        return f"error: {body.get('error')}"
    lines = [
        f"site {body['site']}: {body['state']} at {body['ts']}",
        *(f"  problem: {problem}" for problem in body.get("problems", [])),
        f"log: {body['log_db']}  outbox backlog: {body['outbox_backlog']}",
        "assets:",
    ]
    for name, a in body["assets"].items():
        lines.append(
            f"  {name:<16} p={a['p_kw']} kW soc={a['soc']} "
            f"available={a['available']} setpoint={a['setpoint_kw']}"
        )
    for hold in body.get("holds", []):
        lines.append(f"  {hold['device']} held at {hold['kw']} kW until {hold['until']}")
    lines.append(f"open commitments: {len(body['open_commitments'])}")
    for c in body["open_commitments"]:
        lines.append(
            f"  {c['id']} {c['ref_type']} {c['window_start']}..{c['window_end']} "
            f"{c['delivered_kwh']}/{c['accepted_kwh']} kWh"
        )
    return "\n".join(lines) + "\n" + json.dumps({"orders": body["orders"]})
