"""What the operator sets on a running site, beyond its orders: pausing market participation,
the safe state, holding a device at a manual setpoint, and what they may read (commitments,
devices, reports). Every change is kept in the log's `operator` table, with the orders the
operator set, and applied again when the daemon starts, until the operator changes it.

Modes: `running`; `paused` (no offers, standing orders withdrawn, every new market message
rejected with the reason `paused: ...`; accepted commitments are still delivered); `safe`
(as paused, and every open commitment ended and reported now, every device at its safe
setpoint until `resume`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flexedge.contract.operator import HoldRequest, Mode, ReleaseRequest, ReportsRequest
from flexedge.contract.wire import iso
from flexedge.controller.core.orders import StandingOrder
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.store import Store
from flexedge.errors import FlexedgeError, StoreError, message_reason

log = logging.getLogger(__name__)

REFUSING: dict[Mode, str | None] = {
    "running": None,
    "paused": "paused: the operator paused market participation (flexedge resume ends it)",
    "safe": "paused: the site is in its safe state (flexedge resume ends it)",
}
SAFE_REASON = "ended early: the operator put the site in its safe state"


class Refused(FlexedgeError):
    """An operator command that changes nothing; the message is the reply's error."""


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], payload: bytes) -> M:
    try:
        return model.model_validate_json(payload or b"{}")
    except ValidationError as exc:
        raise Refused(message_reason(exc, name_missing=False, show_input=False)) from None


class Operator:
    def __init__(
        self, control: ControlLoop, market: MarketDesk, store: Store, clock: Callable[[], float]
    ) -> None:
        self.control = control
        self.market = market
        self.store = store
        self.clock = clock
        self.max_hold_s = market.config.limits.max_hold_s
        self.mode: Mode = "running"
        self.hold_until: dict[str, float] = {}

    # -- state kept across restarts -----------------------------------------------------
    def restore(self) -> None:
        """At start: the mode, the holds not yet over and the orders the operator set."""
        kept = self.store.operator_settings()
        now = self.clock()
        for key, value in kept.items():
            if key.startswith("hold:") and value["until"] > now:
                self._apply_hold(key.removeprefix("hold:"), value["kw"], value["until"])
        standing = self.market.standing
        for tariff_id, pair in kept.get("orders", {}).items():
            if tariff_id in standing.policies:  # a tariff the site file still has
                standing.policies[tariff_id] = {
                    d: StandingOrder(tariff_id, standing.tariff_assets[tariff_id], *o)
                    for d, o in pair.items()
                }
        self._apply_mode(kept.get("mode", "running"))
        if self.mode != "running" or self.hold_until:
            log.warning("operator settings kept from before: %s", self.summary())

    def keep_orders(self) -> None:
        """After a set-order: the orders as the operator left them, for the next start."""
        orders = {
            t: {d: [o.exercise_ratio, o.price_per_kwh] for d, o in pair.items()}
            for t, pair in self.market.standing.policies.items()
        }
        with self.store.transaction():
            self.store.set_operator("orders", orders, self.clock())

    def summary(self) -> str:
        holds = ", ".join(
            f"{d} at {kw} kW" if kw is not None else f"{d} (not written)"
            for d, kw in self.control.holds.items()
        )
        return f"mode {self.mode}" + (f", holding {holds}" if holds else "")

    def holds(self) -> list[dict[str, Any]]:
        return [
            {"device": d, "kw": kw, "until": iso(self.hold_until[d])}
            for d, kw in self.control.holds.items()
        ]

    def _apply_mode(self, mode: Mode) -> None:
        self.mode = mode
        self.market.refusing = REFUSING[mode]
        self.market.standing.suspended = mode != "running"
        self.control.safe = mode == "safe"

    def _apply_hold(self, device: str, kw: float | None, until: float) -> None:
        self.control.holds[device] = kw
        self.hold_until[device] = until

    def expire_holds(self) -> None:
        """Each tick: a hold whose time is over ends (the device goes back to dispatch)."""
        now = self.clock()
        for device in [d for d, until in self.hold_until.items() if until <= now]:
            try:
                self._drop_hold(device)
            except StoreError:
                return  # logged by the store; the hold ends on a later tick
            log.info("hold of %s over: back to dispatch", device)

    def _drop_hold(self, device: str) -> None:
        with self.store.transaction():
            self.store.set_operator(f"hold:{device}", None, self.clock())
        self.control.holds.pop(device, None)
        self.hold_until.pop(device, None)

    # -- the commands ---------------------------------------------------------------------
    async def command(self, name: str, payload: bytes) -> dict[str, Any]:
        """Do `name`; raises Refused or StoreError, having changed nothing."""
        if name in ("pause", "resume", "safe"):
            return await self._change_mode(name)
        if name == "hold":
            return self._hold(_parse(HoldRequest, payload))
        if name == "release":
            return self._release(_parse(ReleaseRequest, payload))
        if name == "reports":
            last = _parse(ReportsRequest, payload).last
            return {"ok": True, "reports": self.store.latest_reports(last)}
        if name == "commitments":
            return {"ok": True, "commitments": self._commitments()}
        if name == "devices":
            return {"ok": True, "devices": self._devices()}
        raise KeyError(name)

    async def _change_mode(self, name: str) -> dict[str, Any]:
        modes: dict[str, Mode] = {"pause": "paused", "resume": "running", "safe": "safe"}
        mode = modes[name]
        if mode == self.mode:
            raise Refused(f"already {mode}" if mode != "running" else "not paused")
        if self.mode == "safe" and mode == "paused":
            raise Refused("the site is in its safe state: flexedge resume ends it")
        with self.store.transaction():
            self.store.set_operator("mode", mode, self.clock())
        previous, ended = self.mode, []
        self._apply_mode(mode)
        if mode == "safe":
            for device in list(self.control.holds):
                self._drop_hold(device)
            try:
                ended = await self.control.end_commitments(SAFE_REASON)
            except StoreError:
                log.warning("safe state: the open commitments end when the log takes them")
            await self.control.tick()  # every device to its safe setpoint now
        log.warning("operator: %s (was %s)", mode, previous)
        self.market.standing.refresh_orders()
        return {"ok": True, "mode": mode, "ended": ended}

    def _hold(self, request: HoldRequest) -> dict[str, Any]:
        device, now = request.device, self.clock()
        kw = None if request.kw is None else float(request.kw)
        asset = self.control.assets.get(device)
        if asset is None:
            raise Refused(f"unknown device {device!r}; known: {', '.join(self.control.assets)}")
        if self.mode == "safe":
            raise Refused("the site is in its safe state: flexedge resume first")
        if request.for_s > self.max_hold_s:
            raise Refused(
                f"for_s {request.for_s:g} is beyond limits.max_hold_s {self.max_hold_s:g}"
            )
        if kw is not None:
            self._check_hold(device, kw, now)
        until = now + float(request.for_s)

        with self.store.transaction():
            self.store.set_operator(f"hold:{device}", {"kw": kw, "until": until}, now)
        self._apply_hold(device, kw, until)
        log.warning("operator: %s held at %s kW until %s", device, kw, iso(until))
        return {
            "ok": True,
            "device": device,
            "hold": {"device": device, "kw": kw, "until": iso(until)},
        }

    def _check_hold(self, device: str, kw: float, now: float) -> None:
        reading = self.control.readings.get(device)
        view = self.control.assets[device].view(
            reading, self.control.is_fresh(device, now), self.control.period_s, now
        )
        if view.feasible is None:
            raise Refused(f"device {device} cannot be counted on now: no hold")
        low, high, gap = view.feasible.p_min, view.feasible.p_max, view.feasible.gap
        if not low - 1e-9 <= kw <= high + 1e-9:
            raise Refused(f"{kw:g} kW is outside what {device} can do now: {low:g}..{high:g} kW")
        if gap is not None and gap[0] < kw < gap[1]:
            raise Refused(
                f"{device} cannot run at {kw:g} kW: nothing between {gap[0]:g} and {gap[1]:g}"
            )

    def _release(self, request: ReleaseRequest) -> dict[str, Any]:
        if request.device not in self.control.holds:
            raise Refused(f"device {request.device!r} is not held")
        self._drop_hold(request.device)
        log.warning("operator: %s released", request.device)
        return {"ok": True, "device": request.device, "hold": None}

    def _commitments(self) -> list[dict[str, Any]]:
        return [
            {
                "id": c.id,
                "ref": c.ref,
                "ref_type": c.ref_type.value,
                "window_start": iso(c.window_start),
                "window_end": iso(c.window_end),
                "requested_kwh": c.requested_kwh,
                "accepted_kwh": c.accepted_kwh,
                "delivered_kwh": round(progress.delivered_kwh, 6),
                "assets": [*c.assets, *c.backups],
            }
            for c, progress in self.control.commitments_in_progress()
        ]

    def _devices(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        io = self.control.device_io
        out = {}
        for name, summary in self.control.summary(now).items():
            health = io.health[name]
            reading = io.readings.get(name)
            held = [h for h in self.holds() if h["device"] == name]
            out[name] = {
                **summary,
                "last_reading": iso(reading.ts) if reading else None,
                "failures": health.failures,
                "retry_at": iso(health.next_attempt) if health.failures else None,
                "last_error": io.last_error.get(name),
                "held": held[0] if held else None,
            }
        return out
