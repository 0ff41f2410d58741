"""Dispatch in the shell: the core's plan for every open commitment, turned into the writes
of the devices asked for, and logged with the allocations behind each setpoint.

A setpoint row is logged when a device's setpoint or its allocations change, not on every
tick that writes the same again: the log keeps what was decided, at a size that does not
grow with the control rate."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flexedge.controller.core.dispatch import plan
from flexedge.controller.core.model import Commitment
from flexedge.controller.core.relays import is_shed
from flexedge.controller.daemon.assets import Asset, LoadAsset
from flexedge.controller.daemon.control.commitments import OpenCommitments
from flexedge.controller.daemon.control.device_io import DeviceIO
from flexedge.controller.daemon.store import Store
from flexedge.errors import StoreError

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        assets: Mapping[str, Asset],
        commitments: OpenCommitments,
        device_io: DeviceIO,
        store: Store,
        period_s: float,
        holds: Mapping[str, float | None],
    ) -> None:
        self.assets = assets
        self.commitments = commitments
        self.device_io = device_io
        self.store = store
        self.period_s = period_s
        # The allocations in force on each device (commitment id -> kW), as metering needs.
        self.allocations: dict[str, dict[str, float]] = {}
        self._beats = 0  # controller heartbeat, written with every tick's setpoints
        self._logged: dict[str, tuple[float | None, str]] = {}  # asset -> last row logged
        # The operator's: devices held at a setpoint (kW, site sign), out of the plan; and the
        # safe state, in which every device gets its safe setpoint and nothing is planned.
        self.holds = holds
        self.safe = False

    async def dispatch(
        self, names: Iterable[str], now: float, cause: str, new: Sequence[Commitment] = ()
    ) -> None:
        """Plan and write `names`; for `new` commitments only those of their backups the plan
        put them on (the others have nothing new to be told)."""
        io = self.device_io
        # A held device is out of the plan, as if it could not be counted on: its share of a
        # commitment moves to the others.
        views = {
            name: asset.view(
                io.readings.get(name),
                io.is_fresh(name, now) and name not in self.holds,
                self.period_s,
                now,
            )
            for name, asset in self.assets.items()
        }
        result = plan(list(self.commitments.by_id.values()), self.commitments.progress, views, now)
        if new:
            names = [
                n
                for n in names
                if any(n in c.assets or c.id in result.allocations.get(n, {}) for c in new)
            ]
        targets = [n for n in names if n in result.setpoints and io.ready(n, now)]
        for name in targets:
            self.allocations[name] = result.allocations[name]
        heartbeat = cause == "tick"
        writes = {n: self.assets[n].command(result.setpoints[n], now) for n in targets}
        why = dict.fromkeys(targets, cause)
        # Held devices and, in the safe state, all get their setpoint each tick like any
        # other, so the device's own lease stays fed.
        for n in (n for n in names if (self.safe or n in self.holds) and io.ready(n, now)):
            asset, held = self.assets[n], self.holds.get(n)
            if self.safe:
                writes[n], why[n] = asset.safe_command(), "safe"
            elif held is None:
                writes.pop(n, None)  # held out of dispatch for someone else to drive
            else:
                writes[n], why[n] = asset.command(held, now), "hold"
        if heartbeat:
            self._beats += 1
            # A device that answers but ignored our writes gets its safe setpoint and the
            # heartbeat each tick, so it is counted on again as soon as it takes them.
            writes.update(
                {
                    n: self.assets[n].safe_command()
                    for n in names
                    if n not in writes and io.needs_probe(n, now)
                }
            )
        for n, p in writes.items():
            asset = self.assets[n]
            if not isinstance(asset, LoadAsset) or asset.relay is None:
                continue
            if asset.history.record(is_shed(p), now):  # what the relay rules count
                log.debug("relay %s switched %s", n, "off" if is_shed(p) else "on")
        await io.write_bounded(writes, self._beats if heartbeat else None)
        logged = {n: (p, json.dumps(result.allocations.get(n, {}))) for n, p in writes.items()}
        changed = {n: row for n, row in logged.items() if self._logged.get(n) != row}
        rows: list[dict[str, Any]] = [
            {
                "ts": now,
                "asset": n,
                "p_kw": p,
                "allocations": allocations,
                "cause": why.get(n, "probe"),
            }
            for n, (p, allocations) in changed.items()
        ]
        if not rows:
            return
        try:
            with self.store.transaction():
                self.store.log_setpoints(rows)
        except StoreError as exc:
            log.debug("setpoints not logged: %s", exc)  # still unlogged: tried next tick
            return
        self._logged.update(changed)
