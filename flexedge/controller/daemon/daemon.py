"""`flexedge run`: wire the shell together and keep it running.

One asyncio loop. APScheduler triggers the control tick and the slot start; paho's thread only
hands messages over; one extra tick is scheduled at every commitment's window end so that its
last interval is metered exactly and its report goes out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from flexedge.config.loader import Site
from flexedge.contract.wire import INBOUND_TYPES, encode, status, telemetry
from flexedge.controller.daemon.commands import CommandHandler
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.market_desk import MarketDesk
from flexedge.controller.daemon.metrics import Metrics
from flexedge.controller.daemon.notify import Notifier, site_summary
from flexedge.controller.daemon.operator import Operator
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.retention import prune_step
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Device
from flexedge.drivers.factory import build_device
from flexedge.errors import ConfigError, DeviceError, StoreError
from flexedge.mqtt import Inbound, MqttLink

log = logging.getLogger(__name__)

# A flood of messages is decided in runs of at most this long, so that the control tick is
# never starved: between runs a due tick (and the dispatch of what was decided) goes first.
BUSY_RUN_S = 0.1


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
        self.operator = Operator(self.control, self.market, self.store, clock)
        self.commands = CommandHandler(
            site=self.config.site,
            control=self.control,
            market=self.market,
            store=self.store,
            outbox=self.outbox,
            link=self.link,
            clock=clock,
            daemon_state=lambda: self.current_state,
            problems=lambda: self.problems,
            operator=self.operator,
        )
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # Under a Type=notify unit: READY after the first tick, WATCHDOG from every tick that
        # completes (a stuck tick stops the pings), STATUS when the summary changes.
        self.notifier = Notifier()
        self._notified_status = ""
        # Market messages the log could not take yet, oldest first: not acknowledged to the
        # broker (which sends them again after a restart) and retried here until they land.
        self._held: deque[Inbound] = deque()
        self._holding = asyncio.Lock()
        self._published_state: tuple[str, tuple[str, ...]] = ("", ())
        self.metrics = Metrics(self.config.metrics, self.config.site)

    @property
    def problems(self) -> list[str]:
        """Why the site is degraded; empty when it is not."""
        problems = [self.store.problem] if self.store.problem else []
        if self._held:
            problems.append(
                f"{len(self._held)} market messages wait for the log "
                "(not acknowledged to the broker yet)"
            )
        return problems

    @property
    def current_state(self) -> str:
        if self.state != "online":
            return self.state
        if self.problems:
            return "degraded"
        mode = self.operator.mode if hasattr(self, "operator") else "running"
        return {"running": "online", "paused": "paused", "safe": "safe"}[mode]

    def _status_payload(self, state: str) -> bytes:
        assets = self.control.summary(self.clock()) if hasattr(self, "control") else {}
        problems = self.problems if hasattr(self, "_held") else []
        return encode(status(state, assets, self.clock(), problems))

    def _publish_status(self) -> None:
        self._published_state = (self.current_state, tuple(self.problems))
        self.link.publish(f"{self.base}/status", self._status_payload(self.current_state), 1, True)

    def _publish_status_on_change(self) -> None:
        if self.state != "starting" and (
            (self.current_state, tuple(self.problems)) != self._published_state
        ):
            self._publish_status()

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

    async def _next_message(self, busy_since: float) -> tuple[Inbound, float]:
        """The next inbound message, and since when the consumer has run without a pause.
        Messages already queued are taken without yielding to the loop, so commitments that
        arrive together are planned together; after BUSY_RUN_S of that, it pauses until a
        tick or dispatch that became due meanwhile has run."""
        inbound = self.link.inbound
        if inbound.empty():
            message = await inbound.get()
            return message, time.monotonic()
        if time.monotonic() - busy_since > BUSY_RUN_S:
            await asyncio.sleep(0.001)  # long enough for a due tick to start and take the lock
            async with self.control.lock:
                pass  # until that tick, or the dispatch, is done
            busy_since = time.monotonic()
        return inbound.get_nowait(), busy_since

    async def _consume(self) -> None:
        prefix = self.base + "/"
        busy_since = time.monotonic()
        while True:
            message, busy_since = await self._next_message(busy_since)
            suffix = message.topic.removeprefix(prefix)
            if suffix in INBOUND_TYPES:
                self._held.append(message)
                await self._handle_held()
                continue
            try:
                if suffix.startswith("cmd/"):
                    # Answered from memory when the log fails, so never held behind the market.
                    await self.commands.handle(message, suffix.removeprefix("cmd/"))
            except Exception:  # one bad message must not stop the site
                log.exception("handling %s failed", message.topic)
            self.link.ack(message)

    async def _handle_held(self) -> None:
        """Decide the held market messages in order; each is acknowledged to the broker once
        its decision and its ack are in the log. The first the log refuses stops the rest."""
        async with self._holding:
            while self._held:
                message = self._held[0]
                suffix = message.topic.removeprefix(self.base + "/")
                try:
                    await self.market.handle(message, suffix)
                except StoreError:
                    self._publish_status_on_change()
                    return  # logged by the store; tried again by the retry job
                except Exception:  # one bad message must not stop the site
                    log.exception("handling %s failed", message.topic)
                self._held.popleft()
                self.link.ack(message)
            self._publish_status_on_change()

    async def _retry_held(self) -> None:
        if self._held:
            await self._handle_held()

    async def _slot_start(self) -> None:
        try:
            offers = self.market.publish_offers()
        except StoreError as exc:
            log.warning("slot start: no offers published: %s", exc)
            return
        log.info("slot start: %d offers", len(offers))

    async def _telemetry(self) -> None:
        now = self.clock()
        self.link.publish(
            f"{self.base}/telemetry", encode(telemetry(self.control.summary(now), now)), qos=0
        )

    async def _tick(self) -> None:
        self.operator.expire_holds()
        began = self.metrics.tick_started()
        await self.control.tick()
        with contextlib.suppress(StoreError):  # logged by the store; tried on the next tick
            self.market.standing.refresh_orders()
        await self._telemetry()
        self.metrics.tick_done(began, self)
        self._publish_status_on_change()
        self.notifier.watchdog()
        self._notify_status()

    def _summary_line(self) -> str:
        return site_summary(
            self.current_state,
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
        self.metrics.start()  # first: a busy port stops the start before any device is touched
        await self._connect_devices()
        self.log_start()
        self.market.restore()
        self.operator.restore()
        await self.link.start()
        for suffix in (*INBOUND_TYPES, "cmd/+"):
            self.link.subscribe(f"{self.base}/{suffix}", qos=1)
        await self.link.wait_subscribed()
        await self.control.tick()
        self.state = "online"
        self.metrics.update(self)
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
            await self.metrics.stop()
            self.store.close()

    def log_start(self) -> None:
        # `flexedge report` reads the control period here: setpoint rows are logged only
        # when they change, so their spacing no longer tells it.
        settings = {"control_period_s": self.config.control_period_s}
        with contextlib.suppress(StoreError), self.store.transaction():
            self.store.log_event(self.clock(), "started", json.dumps(settings))

    async def prune_log(self) -> None:
        """A few bounded steps of retention a minute, each its own short transaction."""
        for _ in range(20):
            try:
                removed = prune_step(self.store, self.config.retention, self.clock())
            except StoreError:
                return  # logged by the store; tried again next minute
            if not removed:
                return
            await asyncio.sleep(0)  # let a tick or a message in between

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

        def every(job: Callable[[], Any], seconds: float, grace: float, start: float) -> None:
            # One instance at a time; a run missed by more than `grace` is skipped, and runs
            # missed together run once (coalesced).
            scheduler.add_job(
                job,
                "interval",
                seconds=seconds,
                start_date=datetime.fromtimestamp(start, UTC),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(grace)),
            )

        period = self.config.control_period_s
        # APScheduler runs the ticks at first_tick + k * period (wall time): the metrics
        # measure each tick's lateness from there.
        first_tick = time.time() + period
        self.metrics.ticks_from(first_tick, period)
        every(self._tick, period, 1, first_tick)
        slot, now = self.config.slot_seconds, self.clock()
        every(self._slot_start, slot, slot // 4, now - now % slot + slot)
        soon = time.time() + 1
        every(self._flush, 5, 5, soon)
        every(self.prune_log, 60, 60, soon)
        every(self._retry_held, 2, 2, soon)
        every(self._checkpoint, 10, 10, soon)
        return scheduler

    async def _flush(self) -> None:
        self.outbox.flush()

    async def _checkpoint(self) -> None:
        await asyncio.to_thread(self.store.checkpoint)
