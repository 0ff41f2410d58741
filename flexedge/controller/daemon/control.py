"""The control loop: poll devices, meter, close finished commitments, dispatch, write.

This is the shell around the pure core: it owns the live state (latest readings, open
commitments and their metered progress, the allocations in force on each device), does the
device I/O and the logging, and asks the core what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from flexedge.config.loader import Site
from flexedge.contract.wire import delivery_report, measurement
from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.dispatch import plan
from flexedge.controller.core.health import DeviceHealth, setpoint_confirmed
from flexedge.controller.core.metering import Sample, attribute, per_slot
from flexedge.controller.core.model import Commitment, Progress
from flexedge.controller.core.reports import build_report, reported_assets
from flexedge.controller.daemon.assets import LoadAsset, asset_for
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Device, Reading
from flexedge.errors import DeviceError

log = logging.getLogger(__name__)

# A device whose last good reading is older than this many control periods is unavailable.
STALE_PERIODS = 3


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
        self.devices = devices
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.period_s = site.config.control_period_s
        self.assets = {d.name: asset_for(d) for d in site.config.devices}
        self.readings: dict[str, Reading] = {}
        self.commitments: dict[str, Commitment] = {}
        self.progress: dict[str, Progress] = {}
        self._last_sample: dict[str, Sample] = {}
        self._allocations: dict[str, dict[str, float]] = {}
        self._setpoints: dict[str, float | None] = {}  # last written; None = released
        self.health = {name: DeviceHealth(self.period_s) for name in devices}
        self._in_flight: dict[str, asyncio.Task[Any]] = {}
        self._beats = 0  # controller heartbeat, written with every tick's setpoints
        self.lease_s = {d.name: d.setpoint_timeout_s for d in site.config.devices}
        self._leased: set[str] = set()  # devices whose lease is set since they last answered
        self._answered_at: dict[str, float] = {}
        self._unlogged: list[Reading] = []
        self._report_baselines: dict[str, dict[str, float]] = {}
        self.slot_s = float(site.config.slot_seconds)
        # Metered energy against the baseline per asset and slot, until it is reported.
        self._slot_energy: dict[str, dict[float, tuple[float, float]]] = {}
        self.lock = asyncio.Lock()

    # -- state the market side asks about -------------------------------------------------
    def is_fresh(self, name: str, now: float) -> bool:
        """Counted on: it answered within 3 periods, and it follows its setpoint.

        "Answered" is when its driver last returned a reading: a device that pushes its
        state (MQTT) answers with its latest message, which its driver refuses once stale.
        """
        reading = self.readings.get(name)
        answered = self._answered_at.get(name)
        return (
            reading is not None
            and reading.available
            and answered is not None
            and self.health[name].following
            and now - answered <= STALE_PERIODS * self.period_s
        )

    def asset_states(self, now: float) -> dict[str, AssetState]:
        return {
            name: asset.state(self.readings.get(name), self.is_fresh(name, now), now)
            for name, asset in self.assets.items()
        }

    def ledger(self) -> Ledger:
        return Ledger(list(self.commitments.values()), self.progress)

    def add(self, commitment: Commitment, progress: Progress | None = None) -> None:
        self.commitments[commitment.id] = commitment
        self.progress[commitment.id] = progress or Progress()

    # -- device I/O -------------------------------------------------------------------------
    async def _read(self, name: str) -> Reading | None:
        health = self.health[name]
        try:
            reading = await self.devices[name].read()
        except DeviceError as exc:
            if health.failure(self.clock()):
                log.warning("%s; retrying with back-off", exc)
                # It may come back restarted, with its default timeout: set it again then.
                self._leased.discard(name)
            return None
        if health.success():
            log.info("device %s answers again", name)
        if name not in self._leased:
            await self._configure_lease(name)
        self._meter(reading)
        if reading.ts != getattr(self.readings.get(name), "ts", None):
            self._unlogged.append(reading)  # polls and read-backs alike, logged each tick
        self.readings[name] = reading
        self._answered_at[name] = self.clock()
        return reading

    async def _configure_lease(self, name: str) -> None:
        """Write the device-side setpoint lease, so it falls back on its own if we stop."""
        try:
            await self.devices[name].configure_lease(self.lease_s[name])
        except DeviceError as exc:
            log.warning("%s: lease not set (%s); will retry", name, exc.problem)
            return
        self._leased.add(name)

    async def _bounded(self, name: str, work: Coroutine[Any, Any, object]) -> None:
        """Run device I/O but wait for it at most half a period.

        One slow or dead device must not hold up the tick for the others: what is still
        running then finishes in the background, and the device gets no new request until it
        has (each device has at most one request in flight).
        """
        task = asyncio.get_running_loop().create_task(work)
        self._in_flight[name] = task
        task.add_done_callback(lambda _: self._in_flight.pop(name, None))
        await asyncio.wait([task], timeout=self.period_s / 2)

    def _ready(self, name: str, now: float) -> bool:
        return name not in self._in_flight and self.health[name].due(now)

    async def poll(self, names: Iterable[str]) -> list[Reading]:
        """Read every device that is due; returns the readings that are new since the last
        poll (a device that pushes its state, like MQTT, may have nothing new)."""
        now = self.clock()
        due = [n for n in names if self._ready(n, now)]
        before = {n: self.readings[n].ts for n in due if n in self.readings}
        await asyncio.gather(*(self._bounded(n, self._read(n)) for n in due))
        return [
            self.readings[n]
            for n in due
            if n in self.readings and self.readings[n].ts != before.get(n)
        ]

    async def _write(self, name: str, p_kw: float | None, heartbeat: bool = False) -> None:
        health = self.health[name]
        device = self.devices[name]
        beat: int | None = None
        try:
            if heartbeat and await device.write_heartbeat(self._beats):
                beat = self._beats % 65536
            await device.write_setpoint(p_kw)
        except DeviceError as exc:
            if health.failure(self.clock()):
                log.warning("%s; retrying with back-off", exc)
            return
        self._setpoints[name] = p_kw
        # Read back at once: confirms the write and gives metering the moment power changed.
        reading = await self._read(name)
        if reading is None:
            return
        confirmed = (p_kw is None or setpoint_confirmed(p_kw, reading.setpoint_kw)) and (
            beat is None or reading.heartbeat == beat
        )
        if health.write_checked(confirmed):
            if health.following:
                log.info("device %s follows its setpoint again", name)
            else:
                log.warning(
                    "device %s does not take writes (wrote %s kW and heartbeat "
                    "%s, reads %s and %s); not counted on until it does",
                    name,
                    p_kw,
                    beat,
                    reading.setpoint_kw,
                    reading.heartbeat,
                )

    # -- metering ---------------------------------------------------------------------------
    def _meter(self, reading: Reading) -> None:
        name = reading.asset
        asset = self.assets[name]
        if isinstance(asset, LoadAsset) and asset.measured is not None:
            # Held by a cap we wrote (until the release is written), or due to be: either
            # way this reading is not what it would draw on its own.
            dispatched = self._setpoints.get(name) is not None or any(
                name in c.assets and c.active_at(reading.ts) for c in self.commitments.values()
            )
            asset.measured.observe(reading.ts, reading.p_kw, dispatched)
        baseline = asset.baseline_kw(reading.ts)
        sample = Sample(reading.ts, reading.p_kw - baseline)
        prev = self._last_sample.get(name)
        self._last_sample[name] = sample
        if prev is None:
            return
        slots = self._slot_energy.setdefault(name, {})
        for slot, (kwh, covered) in per_slot(
            prev, sample, self.slot_s, STALE_PERIODS * self.period_s
        ).items():
            so_far = slots.get(slot, (0.0, 0.0))
            slots[slot] = (so_far[0] + kwh, so_far[1] + covered)
        allocations = self._allocations.get(name, {})
        # A backup counts for a commitment only while dispatch has it covering for it: its
        # own wanderings at other times are none of that commitment's business.
        windows = {
            cid: (c.window_start, c.window_end)
            for cid, c in self.commitments.items()
            if name in c.assets or (name in c.backups and cid in allocations)
        }
        if not windows:
            return
        result = attribute(
            prev, sample, windows, allocations, max_gap_s=STALE_PERIODS * self.period_s
        )
        for cid, kwh in result.energy_kwh.items():
            self.progress[cid].add(name, kwh, result.covered_s.get(cid, 0.0))
            # The baseline this commitment is measured against, for its report.
            self._report_baselines.setdefault(cid, {}).setdefault(name, baseline)

    # -- the loop -----------------------------------------------------------------------------
    async def tick(self) -> None:
        """Poll everything, close what is over, dispatch and write every device."""
        async with self.lock:
            await self.poll(self.devices)
            now = self.clock()
            await self._dispatch(self.devices, now, cause="tick")
            with self.store.transaction():
                self.store.log_telemetry([_telemetry_row(r) for r in self._unlogged])
                self._unlogged.clear()
                self._close_finished(now)
                self._close_slots(now)
                self.store.save_progress(self.progress)
            self.outbox.flush()

    async def dispatch_now(self, commitment: Commitment) -> None:
        """Event-driven dispatch for a new commitment: write only the devices it touches
        (its share assets, and the backups it was put on)."""
        async with self.lock:
            await self._dispatch(
                commitment.may_use, self.clock(), cause=commitment.id, new=commitment
            )

    async def _dispatch(
        self, names: Iterable[str], now: float, cause: str, new: Commitment | None = None
    ) -> None:
        """Plan and write `names`; for a `new` commitment only those of its backups the plan
        put it on (the others have nothing new to be told)."""
        views = {
            name: asset.view(self.readings.get(name), self.is_fresh(name, now), self.period_s, now)
            for name, asset in self.assets.items()
        }
        result = plan(list(self.commitments.values()), self.progress, views, now)
        if new is not None:
            names = [n for n in names if n in new.assets or new.id in result.allocations.get(n, {})]
        targets = [n for n in names if n in result.setpoints and self._ready(n, now)]
        for name in targets:
            self._allocations[name] = result.allocations[name]
        heartbeat = cause == "tick"
        writes = {n: self.assets[n].command(result.setpoints[n], now) for n in targets}
        if heartbeat:
            self._beats += 1
            # A device that answers but ignored our writes gets its safe setpoint and the
            # heartbeat each tick, so it is counted on again as soon as it takes them.
            writes.update(
                {
                    n: self.assets[n].safe_command()
                    for n in names
                    if n not in writes
                    and self._ready(n, now)
                    and self.health[n].answering
                    and not self.health[n].following
                }
            )
        await asyncio.gather(
            *(self._bounded(n, self._write(n, p, heartbeat)) for n, p in writes.items())
        )
        self.store.log_setpoints(
            [
                {
                    "ts": now,
                    "asset": n,
                    "p_kw": p,
                    "allocations": json.dumps(result.allocations.get(n, {})),
                    "cause": cause if n in targets else "probe",
                }
                for n, p in writes.items()
            ]
        )

    def _close_finished(self, now: float) -> None:
        """Report every commitment whose window is over and metered past its end."""
        grace = STALE_PERIODS * self.period_s
        for cid, commitment in list(self.commitments.items()):
            if now < commitment.window_end:
                continue
            metered_past_end = all(
                a in self._last_sample and self._last_sample[a].ts >= commitment.window_end
                for a in commitment.assets
            )
            if not metered_past_end and now < commitment.window_end + grace:
                continue
            used = self._report_baselines.pop(cid, {})
            progress = self.progress[cid]
            baselines = {
                a: used.get(a, self.assets[a].baseline_kw(commitment.window_start))
                for a in reported_assets(commitment.assets, commitment.backups, progress.by_asset)
            }
            report = build_report(
                commitment, progress, baselines, self.site.config.delivery_tolerance
            )
            payload = delivery_report(report)
            self.store.close_commitment(cid, payload, now)
            self.outbox.put("market/delivery", payload)
            log.info(
                "commitment %s %s: %.4f of %.4f kWh",
                cid,
                report.status,
                report.delivered_kwh,
                report.accepted_kwh,
            )
            del self.commitments[cid]
            self.store.save_progress({cid: self.progress.pop(cid)})

    def _close_slots(self, now: float) -> None:
        """One `measurement` per asset and slot once the slot is metered past its end."""
        grace = STALE_PERIODS * self.period_s
        for name, slots in self._slot_energy.items():
            last = self._last_sample[name].ts
            for slot in [
                s
                for s in slots
                if s + self.slot_s <= min(last, now) or s + self.slot_s + grace <= now
            ]:
                kwh, covered = slots.pop(slot)
                payload = measurement(
                    self.site.config.site, name, slot, kwh, min(1.0, covered / self.slot_s)
                )
                self.store.log_measurement(payload, now)
                self.outbox.put("market/measurement", payload)

    async def safe_state(self) -> None:
        """Shutdown: every device back to its baseline (0 kW for a battery)."""
        async with self.lock:
            if self._in_flight:
                await asyncio.wait(list(self._in_flight.values()), timeout=2)
            await asyncio.gather(
                *(self._write(n, self.assets[n].safe_command()) for n in self.devices)
            )

    def summary(self, now: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.assets:
            reading = self.readings.get(name)
            out[name] = {
                "p_kw": round(reading.p_kw, 4) if reading else None,
                "soc": round(reading.soc, 4) if reading and reading.soc is not None else None,
                "available": self.is_fresh(name, now),
                "setpoint_kw": self._setpoints.get(name),
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
