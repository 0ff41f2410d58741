"""The control loop: poll devices, meter, close finished commitments, dispatch, write.

This is the shell around the pure core. The tick here only puts the parts in order; each
concern has its own module (device_io, metering, dispatcher, reporting), and the open
commitments they share live in commitments.OpenCommitments.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flexedge.config.loader import Site
from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.health import DeviceHealth
from flexedge.controller.core.model import Commitment, Progress
from flexedge.controller.daemon.assets import asset_for
from flexedge.controller.daemon.control.commitments import OpenCommitments
from flexedge.controller.daemon.control.device_io import DeviceIO
from flexedge.controller.daemon.control.dispatcher import Dispatcher
from flexedge.controller.daemon.control.metering import Meter
from flexedge.controller.daemon.control.reporting import Closed, Reporter
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Device, Reading
from flexedge.errors import StoreError

log = logging.getLogger(__name__)


class ControlLoop:
    def __init__(
        self,
        site: Site,
        devices: dict[str, Device],
        store: Store,
        outbox: Outbox,
        clock: Callable[[], float],
    ) -> None:
        self.site = site
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.period_s = site.config.control_period_s
        self.slot_s = float(site.config.slot_seconds)
        self.assets = {d.name: asset_for(d) for d in site.config.devices}
        self.open_commitments = OpenCommitments()
        self.device_io = DeviceIO(
            devices,
            self.period_s,
            {d.name: d.setpoint_timeout_s for d in site.config.devices},
            clock,
            on_reading=self._meter,
        )
        # The operator's holds: device -> kW (site sign); dispatch and metering leave them be.
        self.holds: dict[str, float | None] = {}  # None: held and not written at all
        self.meter = Meter(
            self.assets, self.open_commitments, self.period_s, self.slot_s, self.holds
        )
        self.dispatcher = Dispatcher(
            self.assets, self.open_commitments, self.device_io, store, self.period_s, self.holds
        )
        self.reporter = Reporter(
            site, self.assets, self.open_commitments, self.meter, store, outbox
        )
        self.lock = asyncio.Lock()
        # New commitments waiting for their event-driven dispatch, and the task that does it.
        self._undispatched: list[Commitment] = []
        self._dispatching: asyncio.Task[None] | None = None

    # -- state the market side, the operator and the tests ask about -----------------------
    @property
    def devices(self) -> dict[str, Device]:
        return self.device_io.devices

    @property
    def readings(self) -> dict[str, Reading]:
        """The latest reading of each device that has answered."""
        return self.device_io.readings

    @property
    def health(self) -> dict[str, DeviceHealth]:
        return self.device_io.health

    @property
    def setpoints(self) -> dict[str, float | None]:
        """The setpoint last written to each device (None: a released load)."""
        return self.device_io.setpoints

    @property
    def allocations(self) -> dict[str, dict[str, float]]:
        """What dispatch has each commitment on each device for (kW)."""
        return self.dispatcher.allocations

    def is_fresh(self, name: str, now: float) -> bool:
        return self.device_io.is_fresh(name, now)

    def asset_states(self, now: float) -> dict[str, AssetState]:
        return {
            name: asset.state(self.readings.get(name), self.is_fresh(name, now), now)
            for name, asset in self.assets.items()
        }

    def ledger(self) -> Ledger:
        return self.open_commitments.ledger()

    def add(self, commitment: Commitment, progress: Progress | None = None) -> None:
        self.open_commitments.add(commitment, progress)

    def commitments_in_progress(self) -> list[tuple[Commitment, Progress]]:
        """Every open commitment with its metered progress, oldest first."""
        book = self.open_commitments
        return [(c, book.progress[cid]) for cid, c in book.by_id.items()]

    # -- the loop ---------------------------------------------------------------------------
    async def poll(self, names: Iterable[str]) -> list[Reading]:
        """Read every device that is due; returns the readings new since the last poll."""
        return await self.device_io.poll(names)

    def _meter(self, reading: Reading) -> None:
        self.meter.observe(
            reading,
            capped=self.device_io.setpoints.get(reading.asset) is not None,
            allocations=self.dispatcher.allocations,
        )

    async def tick(self) -> None:
        """Poll everything, close what is over, dispatch and write every device."""
        async with self.lock:
            await self.poll(self.devices)
            now = self.clock()
            await self.dispatcher.dispatch(self.devices, now, cause="tick")
            closed = Closed()
            try:
                with self.store.transaction():
                    self.store.log_telemetry([_telemetry_row(r) for r in self.device_io.unlogged()])
                    self.reporter.close_finished(now, closed)
                    self.reporter.close_slots(now, closed)
                    self.store.save_progress(self.open_commitments.progress)
            except StoreError as exc:
                # Control goes on; what was to be logged and reported waits in memory for a
                # tick whose transaction commits (the store logs the failure once).
                log.debug("tick not logged: %s", exc)
            else:
                self.device_io.mark_logged()
                self.reporter.forget(closed)
            self.outbox.flush()

    def dispatch_soon(self, commitment: Commitment) -> None:
        """Event-driven dispatch for a new commitment, without waiting for the next tick.

        It runs once the loop is free, after every message already received has been
        decided, so commitments that arrive together (a market buying a battery's up and
        down offers at once, a burst of control events) are planned and written together:
        no device is written for one of them alone when the net of all is what it must do.
        It writes only the devices they touch (their share assets, and the backups the plan
        put them on)."""
        self._undispatched.append(commitment)
        if self._dispatching is None or self._dispatching.done():
            self._dispatching = asyncio.get_running_loop().create_task(self._dispatch_new())

    async def _dispatch_new(self) -> None:
        async with self.lock:
            new, self._undispatched = self._undispatched, []
            self._dispatching = None
            names = dict.fromkeys(n for c in new for n in c.may_use)
            cause = ",".join(c.id for c in new)
            await self.dispatcher.dispatch(names, self.clock(), cause=cause, new=new)

    async def dispatched(self) -> None:
        """Until the commitments handed to dispatch_soon so far have been written."""
        while self._dispatching is not None and not self._dispatching.done():
            await asyncio.shield(self._dispatching)

    async def end_commitments(self, reason: str) -> list[str]:
        """End every open commitment now, reported with `reason` (the operator's safe
        state); returns their ids. Raises StoreError, ending none."""
        async with self.lock:
            closed = Closed()
            with self.store.transaction():
                self.reporter.close_finished(self.clock(), closed, ended_early=reason)
            self.reporter.forget(closed)
        self.outbox.flush()
        return [cid for cid, _ in closed.commitments]

    @property
    def safe(self) -> bool:
        return self.dispatcher.safe

    @safe.setter
    def safe(self, on: bool) -> None:
        """In the safe state every device gets its safe setpoint each tick, nothing else."""
        self.dispatcher.safe = on

    async def safe_state(self) -> None:
        """Shutdown: every device back to its baseline (0 kW for a battery)."""
        if self._dispatching is not None:  # nothing may be written after the safe state
            self._dispatching.cancel()
            self._dispatching = None
        async with self.lock:
            await self.device_io.settle(timeout_s=2)
            await asyncio.gather(
                *(self.device_io.write(n, self.assets[n].safe_command()) for n in self.devices)
            )

    def summary(self, now: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.assets:
            reading = self.readings.get(name)
            out[name] = {
                "p_kw": round(reading.p_kw, 4) if reading else None,
                "soc": round(reading.soc, 4) if reading and reading.soc is not None else None,
                "available": self.is_fresh(name, now),
                "setpoint_kw": self.setpoints.get(name),
            }
        return out


def _telemetry_row(reading: Reading) -> dict[str, Any]:
    return {
        "ts": reading.ts,
        "asset": reading.asset,
        "p_kw": reading.p_kw,
        "soc": reading.soc,
        "available": int(reading.available),
        "setpoint_kw": reading.setpoint_kw,
    }
