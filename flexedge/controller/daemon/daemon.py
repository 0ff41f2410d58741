"""`flexedge run`: wire the shell together and keep it running.

One asyncio loop. APScheduler triggers the control tick and the slot start; paho's thread only
hands messages over; one extra tick is scheduled at every commitment's window end so that its
last interval is metered exactly and its report goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from flexedge.config.loader import Site
from flexedge.contract.wire import INBOUND_TYPES, encode, status, telemetry
from flexedge.controller.daemon.commands import CommandHandler
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.notify import Notifier, site_summary
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Device
from flexedge.drivers.factory import build_device
from flexedge.errors import ConfigError, DeviceError
from flexedge.mqtt import Inbound, MqttLink

log = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self,
        site: Site,
        clock: Callable[[], float] = time.time,
        devices: Mapping[str, Device] | None = None,
    ) -> None:
        """`devices`: the devices to drive, by name (default: built from the site file)."""
        self.site = site
        self.config = site.config
        self.clock = clock
        self.base = f"{self.config.mqtt.prefix}/{self.config.site}"
        self.state = "starting"
        try:
            self.store = Store(site.log_db_path)
        except (OSError, sqlite3.Error) as exc:
            # Under systemd a relative log_db lands next to a read-only site file.
            raise ConfigError(
                str(site.path), "log_db", f"cannot open the SQLite log {site.log_db_path}: {exc}"
            ) from None
        self.link = MqttLink.for_broker(
            self.config.mqtt.broker(),
            client_id=f"flexedge-{self.config.site}",
            will=(f"{self.base}/status", self._status_payload("offline"), 1, True),
            on_connect=self._on_connect,
            # A kept session makes the broker redeliver inbound messages we had not yet
            # persisted (manual acks) when the daemon restarts.
            session_expiry=3600,
        )
        self.outbox = Outbox(self.store, self.link, self.base, clock)
        self.devices: dict[str, Device] = (
            dict(devices)
            if devices is not None
            else {
                d.name: build_device(d, site.maps[d.name], mqtt=self.config.mqtt)
                for d in self.config.devices
            }
        )
        self.control = ControlLoop(site, self.devices, self.store, self.outbox, clock)
        self.market = MarketDesk(
            site, self.control, self.store, self.outbox, clock, self._schedule_tick_at
        )
        self.commands = CommandHandler(
            site=self.config.site,
            control=self.control,
            market=self.market,
            store=self.store,
            outbox=self.outbox,
            link=self.link,
            clock=clock,
            daemon_state=lambda: self.state,
        )
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # Under a Type=notify unit: READY after the first tick, WATCHDOG from every tick that
        # completes (a stuck tick stops the pings), STATUS when the summary changes.
        self.notifier = Notifier()
        self._notified_status = ""

    def _status_payload(self, state: str) -> bytes:
        assets = self.control.summary(self.clock()) if hasattr(self, "control") else {}
        return encode(status(state, assets, self.clock()))

    def _publish_status(self) -> None:
        self.link.publish(f"{self.base}/status", self._status_payload(self.state), 1, True)

    def _on_connect(self) -> None:
        # Runs on the loop after every (re)connect: resend whatever is not confirmed yet.
        self.outbox.reset_in_flight()
        if self.state != "starting":
            self._publish_status()
        self.outbox.flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule_tick_at(self, when: float) -> None:
        delay = max(0.0, when - self.clock())
        asyncio.get_running_loop().call_later(delay, lambda: self._spawn(self.control.tick()))

    async def _consume(self) -> None:
        prefix = self.base + "/"
        while True:
            message: Inbound = await self.link.inbound.get()
            suffix = message.topic.removeprefix(prefix)
            try:
                if suffix in INBOUND_TYPES:
                    await self.market.handle(message, suffix)
                elif suffix.startswith("cmd/"):
                    await self.commands.handle(message, suffix.removeprefix("cmd/"))
            except Exception:  # one bad message must not stop the site
                log.exception("handling %s failed", message.topic)
            self.link.ack(message)

    async def _slot_start(self) -> None:
        offers = self.market.publish_offers()
        log.info("slot start: %d offers", len(offers))

    async def _telemetry(self) -> None:
        now = self.clock()
        self.link.publish(
            f"{self.base}/telemetry", encode(telemetry(self.control.summary(now), now)), qos=0
        )

    async def _tick(self) -> None:
        await self.control.tick()
        self.market.standing.refresh_orders()
        await self._telemetry()
        self.notifier.watchdog()
        self._notify_status()

    def _summary_line(self) -> str:
        return site_summary(
            self.state,
            self.control.summary(self.clock()),
            len(self.control.commitments_in_progress()),
        )

    def _notify_status(self) -> None:
        line = self._summary_line()
        if line != self._notified_status:
            self._notified_status = line
            self.notifier.status(line)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._connect_devices()
        self.market.restore()
        await self.link.start()
        for suffix in (*INBOUND_TYPES, "cmd/+"):
            self.link.subscribe(f"{self.base}/{suffix}", qos=1)
        await self.link.wait_subscribed()
        await self.control.tick()
        self.state = "online"
        self._publish_status()
        self.market.standing.clear_stale_orders()
        self.market.standing.refresh_orders()
        await self._slot_start()
        scheduler = self._scheduler()
        scheduler.start()
        consumer = loop.create_task(self._consume())
        self._notified_status = self._summary_line()
        self.notifier.ready(self._notified_status)
        log.info(
            "flexedge %s online: %d devices, broker %s:%s, log %s",
            self.config.site,
            len(self.devices),
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.store.path,
        )
        try:
            await self._stop.wait()
        finally:
            self.notifier.stopping()
            log.info("stopping: devices to safe state")
            scheduler.shutdown(wait=False)
            consumer.cancel()
            self.state = "safe"
            await self.control.safe_state()
            await self.link.stop(
                final=(f"{self.base}/status", self._status_payload("offline"), 1, True)
            )
            for device in self.devices.values():
                await device.close()
            self.store.close()

    async def _connect_devices(self) -> None:
        """Connect each device; a dead one is not fatal (the control loop keeps trying and
        sets its lease once it answers)."""
        for name, device in self.devices.items():
            try:
                await device.connect()
            except DeviceError as exc:
                log.warning("%s: %s; the controller will keep trying", name, exc.problem)

    def stop(self) -> None:
        self._stop.set()

    def _scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=UTC)
        period = self.config.control_period_s
        scheduler.add_job(
            self._tick,
            "interval",
            seconds=period,
            id="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=1,
        )
        slot = self.config.slot_seconds
        now = self.clock()
        next_slot = datetime.fromtimestamp(now - now % slot + slot, UTC)
        scheduler.add_job(
            self._slot_start,
            "interval",
            seconds=slot,
            id="slot",
            start_date=next_slot,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, slot // 4),
        )
        scheduler.add_job(
            self._flush,
            "interval",
            seconds=5,
            id="outbox",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=5,
        )
        scheduler.add_job(
            self._checkpoint,
            "interval",
            seconds=10,
            id="checkpoint",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=10,
        )
        return scheduler

    async def _flush(self) -> None:
        self.outbox.flush()

    async def _checkpoint(self) -> None:
        await asyncio.to_thread(self.store.checkpoint)
