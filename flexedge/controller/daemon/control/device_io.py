"""Device I/O for the control loop: every read and write, with per-device health and
back-off, the device-side setpoint lease, and at most one request in flight per device."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from flexedge.controller.core.health import DeviceHealth, counted_on, setpoint_confirmed
from flexedge.drivers.base import Device, Reading
from flexedge.errors import DeviceError

log = logging.getLogger(__name__)


class DeviceIO:
    def __init__(
        self,
        devices: dict[str, Device],
        period_s: float,
        lease_s: Mapping[str, float],
        clock: Callable[[], float],
        on_reading: Callable[[Reading], None],
    ) -> None:
        self.devices = devices
        self.period_s = period_s
        self.lease_s = dict(lease_s)
        self.clock = clock
        # Called with every reading as it arrives (polls and read-backs alike), for metering.
        self._on_reading = on_reading
        self.readings: dict[str, Reading] = {}
        self.setpoints: dict[str, float | None] = {}  # last written; None = released
        self.health = {name: DeviceHealth(period_s) for name in devices}
        self._in_flight: dict[str, asyncio.Task[Any]] = {}
        self._leased: set[str] = set()  # devices whose lease is set since they last answered
        self._answered_at: dict[str, float] = {}
        self.last_error: dict[str, str] = {}  # what each device's last failure said
        # Readings wait here until a tick's transaction logs them; while the log cannot be
        # written the oldest go first (about an hour's worth per device is kept).
        self._unlogged: deque[Reading] = deque(maxlen=3600 * max(1, len(devices)))

    # -- what the rest of the loop asks --------------------------------------------------
    def is_fresh(self, name: str, now: float) -> bool:
        """Counted on: it answered within 3 periods, and it follows its setpoint.

        "Answered" is when its driver last returned a reading: a device that pushes its
        state (MQTT) answers with its latest message, which its driver refuses once stale.
        """
        reading = self.readings.get(name)
        return reading is not None and counted_on(
            reading.available,
            self._answered_at.get(name),
            self.health[name].following,
            self.period_s,
            now,
        )

    def ready(self, name: str, now: float) -> bool:
        """Nothing in flight for it, and its back-off (if any) is over."""
        return name not in self._in_flight and self.health[name].due(now)

    def needs_probe(self, name: str, now: float) -> bool:
        """It answers but ignored our writes: it gets its safe setpoint and the heartbeat,
        so it is counted on again as soon as it takes them."""
        health = self.health[name]
        return self.ready(name, now) and health.answering and not health.following

    def unlogged(self) -> list[Reading]:
        """The readings not yet written to the telemetry log, oldest first."""
        return list(self._unlogged)

    def mark_logged(self) -> None:
        """The readings `unlogged` returned are in the telemetry log now."""
        self._unlogged.clear()

    # -- reads ----------------------------------------------------------------------------
    async def poll(self, names: Iterable[str]) -> list[Reading]:
        """Read every device that is due; returns the readings that are new since the last
        poll (a device that pushes its state, like MQTT, may have nothing new)."""
        now = self.clock()
        due = [n for n in names if self.ready(n, now)]
        before = {n: self.readings[n].ts for n in due if n in self.readings}
        await asyncio.gather(*(self._bounded(n, self._read(n)) for n in due))
        return [
            self.readings[n]
            for n in due
            if n in self.readings and self.readings[n].ts != before.get(n)
        ]

    async def _read(self, name: str) -> Reading | None:
        health = self.health[name]
        try:
            reading = await self.devices[name].read()
        except DeviceError as exc:
            self.last_error[name] = exc.problem
            if health.failure(self.clock()):
                log.warning("%s; retrying with back-off", exc)
                # It may come back restarted, with its default timeout: set it again then.
                self._leased.discard(name)
            return None
        if health.success():
            log.info("device %s answers again", name)
        if name not in self._leased:
            await self._configure_lease(name)
        self._on_reading(reading)
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

    # -- writes ---------------------------------------------------------------------------
    async def write_bounded(self, writes: Mapping[str, float | None], beat: int | None) -> None:
        """Write each device its setpoint (and the heartbeat `beat`, when given), waiting
        for each at most half a period."""
        await asyncio.gather(*(self._bounded(n, self.write(n, p, beat)) for n, p in writes.items()))

    async def write(self, name: str, p_kw: float | None, beat: int | None = None) -> None:
        """Write a setpoint (and the heartbeat `beat`), then read back to confirm it."""
        health = self.health[name]
        device = self.devices[name]
        shown_beat: int | None = None
        try:
            if beat is not None and await device.write_heartbeat(beat):
                shown_beat = beat % 65536
            await device.write_setpoint(p_kw)
        except DeviceError as exc:
            self.last_error[name] = exc.problem
            if health.failure(self.clock()):
                log.warning("%s; retrying with back-off", exc)
            return
        self.setpoints[name] = p_kw
        # Read back at once: confirms the write and gives metering the moment power changed.
        reading = await self._read(name)
        if reading is None:
            return
        confirmed = (p_kw is None or setpoint_confirmed(p_kw, reading.setpoint_kw)) and (
            shown_beat is None or reading.heartbeat == shown_beat
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
                    shown_beat,
                    reading.setpoint_kw,
                    reading.heartbeat,
                )

    async def settle(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the requests still in flight to finish."""
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=timeout_s)

    async def _bounded(self, name: str, work: Coroutine[Any, Any, object]) -> None:
        """Run device I/O but wait for it at most half a period.

        One slow or dead device must not hold up the tick for the others: what is still
        running then finishes in the background, and the device gets no new request until it
        has (each device has at most one request in flight).
        """
        task = asyncio.get_running_loop().create_task(work)
        self._in_flight[name] = task
        task.add_done_callback(lambda done: self._finished(name, done))
        await asyncio.wait([task], timeout=self.period_s / 2)

    def _finished(self, name: str, task: asyncio.Task[Any]) -> None:
        self._in_flight.pop(name, None)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        # Drivers raise DeviceError, handled where it is raised; anything else is a bug in a
        # driver or in flexedge, and must be seen rather than vanish with its task.
        self.health[name].failure(self.clock())
        self.last_error[name] = f"{type(exc).__name__}: {exc}"
        log.error("device %s: unexpected %s in device I/O", name, type(exc).__name__, exc_info=exc)
