"""The Prometheus endpoint (the site file's `metrics` section).

prometheus_client serves it from a thread of its own, so a scrape runs beside the asyncio
loop, never on it. To keep it from reading state the loop is changing (or SQLite, which is
the loop's alone), the loop takes a Snapshot of plain values after every control tick and
swaps it in as one attribute; a scrape reads whichever snapshot is there. The two timing
histograms are prometheus_client's own, which lock internally. Everything is in a registry
of the daemon's own, not the process-wide default one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flexedge.config.metrics import MetricsSettings
from flexedge.errors import PortUnavailable

if TYPE_CHECKING:
    from flexedge.controller.daemon.daemon import Daemon

log = logging.getLogger(__name__)

# Seconds. A tick polls and writes every device, each bounded by half a period (1 s by
# default), and logs in one transaction: most take milliseconds, a dead device's take longer.
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How late a scheduled tick starts: the loop busy with a message, a slow disk, a loaded CPU.
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a scrape reports of the daemon, as of one tick. Built on the loop and never
    changed afterwards (its mappings are read-only views), so another thread may read it."""

    taken_at: float
    available: Mapping[str, bool]  # device -> counted on now
    failed_requests: Mapping[str, int]  # device -> requests without a usable answer
    open_commitments: int
    closed: Mapping[str, int]  # report status -> commitments closed since start
    delivered_kwh: Mapping[str, float]  # report status -> energy they delivered
    outbox_backlog: int | None  # None: the log could not be read at that tick
    mqtt_connected: bool
    store_failures: int
    degraded: bool


def snapshot_of(daemon: Daemon) -> Snapshot:
    """Read the daemon's state now (on the loop: this counts the outbox in SQLite)."""
    control = daemon.control
    now = daemon.clock()
    reporter = control.reporter
    return Snapshot(
        taken_at=now,
        available=MappingProxyType({n: control.is_fresh(n, now) for n in control.devices}),
        failed_requests=MappingProxyType({n: h.failed_requests for n, h in control.health.items()}),
        open_commitments=len(control.commitments_in_progress()),
        closed=MappingProxyType(dict(reporter.closed_count)),
        delivered_kwh=MappingProxyType(dict(reporter.delivered_kwh)),
        # The real count: Store.unsent(), which the outbox sends from, stops at 1000 rows.
        outbox_backlog=daemon.outbox.backlog(),
        mqtt_connected=daemon.link.connected,
        store_failures=daemon.store.failures,
        degraded=daemon.current_state == "degraded",
    )


class _SnapshotCollector(Collector):
    """Turns the latest snapshot into metric families when a scrape asks."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        snap = self._metrics.snapshot  # one read: the loop may swap in a new one meanwhile
        if snap is None:
            return  # no tick yet: only the site info and the (empty) histograms
        yield _gauge(
            "flexedge_device_available",
            "1 when the device answers and follows its setpoint, so dispatch counts on it",
            "device",
            {n: float(a) for n, a in snap.available.items()},
        )
        yield _counter(
            "flexedge_device_errors",
            "Device requests (reads, writes) that got no usable answer, since start",
            "device",
            snap.failed_requests,
        )
        yield GaugeMetricFamily(
            "flexedge_open_commitments",
            "Accepted commitments not yet closed by their delivery report",
            value=snap.open_commitments,
        )
        yield _counter(
            "flexedge_commitments_closed",
            "Commitments closed with a delivery report since start, by report status",
            "status",
            snap.closed,
        )
        yield _counter(
            "flexedge_delivered_energy_kwh",
            "Energy delivered by the commitments closed since start (kWh), by report status",
            "status",
            snap.delivered_kwh,
        )
        backlog = GaugeMetricFamily(
            "flexedge_outbox_backlog",
            "Messages in the outbox not yet acknowledged by the broker (absent while the "
            "log cannot be read)",
        )
        if snap.outbox_backlog is not None:
            backlog.add_metric([], snap.outbox_backlog)
        yield backlog
        yield GaugeMetricFamily(
            "flexedge_mqtt_connected",
            "1 while connected to the site broker",
            value=float(snap.mqtt_connected),
        )
        yield CounterMetricFamily(
            "flexedge_store_failures",
            "Failed reads and writes of the SQLite log since start",
            value=snap.store_failures,
        )
        yield GaugeMetricFamily(
            "flexedge_degraded",
            "1 while the site is degraded (see its status for the problems)",
            value=float(snap.degraded),
        )
        yield GaugeMetricFamily(
            "flexedge_last_tick_timestamp_seconds",
            "When the last control tick completed (Unix time): a stuck loop stops it",
            value=snap.taken_at,
        )


def _gauge(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _version() -> str:
    try:
        return version("flexedge")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class Metrics:
    def __init__(self, settings: MetricsSettings, site: str) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.tick_duration = Histogram(
            "flexedge_tick_duration_seconds",
            "How long a scheduled control tick took: poll, dispatch, write, log, telemetry",
            buckets=TICK_BUCKETS,
            registry=self.registry,
        )
        self.poll_jitter = Histogram(
            "flexedge_poll_jitter_seconds",
            "How late a scheduled control tick started, from its scheduled time",
            buckets=JITTER_BUCKETS,
            registry=self.registry,
        )
        Info("flexedge_site", "The site and the flexedge version", registry=self.registry).info(
            {"site": site, "version": _version()}
        )
        self.registry.register(_SnapshotCollector(self))
        self.snapshot: Snapshot | None = None
        self._grid: tuple[float, float] | None = None  # first scheduled tick, period
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.listen is not None

    # -- the endpoint ---------------------------------------------------------------------
    def start(self) -> None:
        """Listen, when the site file asks. Raises PortUnavailable (a busy port, an address
        this machine does not have)."""
        address = self.settings.address
        if address is None:
            return
        host, port = address
        if not self.settings.loopback:
            log.warning(
                "metrics.listen %s: the metrics endpoint is reachable from other machines, "
                "without a login",
                self.settings.listen,
            )
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise PortUnavailable("metrics endpoint (metrics.listen)", host, port, exc) from None
        log.info("metrics at http://%s/metrics", self.settings.listen)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # shutdown() waits for the serving thread's next poll (up to half a second).
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- what the loop tells it -----------------------------------------------------------
    def ticks_from(self, first: float, period_s: float) -> None:
        """The scheduled ticks run at `first` + k * `period_s` (Unix time)."""
        self._grid = (first, period_s)

    def tick_started(self) -> float:
        """A scheduled tick starts: how late it is. Returns the start for tick_done."""
        if self._grid is not None:
            first, period = self._grid
            started = time.time()
            # The latest scheduled time at or before now; the slack absorbs the scheduler's
            # rounding to microseconds, which would otherwise read as a period late.
            due = first + math.floor((started - first) / period + 1e-6) * period
            self.poll_jitter.observe(max(0.0, started - due))
        return time.monotonic()

    def tick_done(self, began: float, daemon: Daemon) -> None:
        """The tick that started at `began` is done: its duration, and a new snapshot."""
        self.tick_duration.observe(time.monotonic() - began)
        self.update(daemon)

    def update(self, daemon: Daemon) -> None:
        """After a tick: the state a scrape reports (nothing to do with no endpoint)."""
        if self.enabled:
            self.snapshot = snapshot_of(daemon)
