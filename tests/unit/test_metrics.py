"""The metrics: the site file's section, and what a scrape reports of a Daemon built in this
process (fake device, hand-moved clock, real Store), read through prometheus_client's own
text output of the daemon's registry. No endpoint is opened here (tests/system scrapes one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flexedge.config.loader import EXAMPLE_SITE, Site, load_site
from flexedge.controller.daemon.daemon import Daemon
from flexedge.controller.daemon.metrics import Metrics
from flexedge.errors import ConfigError
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import Clock, control_event, fake_site
from tests.unit.test_store_failures import remount_read_only

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics) -> Samples:
    """Every sample of a scrape, by (name, sorted labels)."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def site_with_metrics(tmp_path: Path, listen: str = "127.0.0.1:9108") -> Site:
    """The in-process shell's fake site, with an endpoint in its file (never opened here)."""
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text())
    raw["metrics"] = {"listen": listen}
    path.write_text(yaml.safe_dump(raw))
    return load_site(path)


@contextmanager
def daemon_of(tmp_path: Path, clock: Clock, battery: FakeDevice) -> Iterator[Daemon]:
    daemon = Daemon(site_with_metrics(tmp_path), clock, devices={"b1": battery})
    try:
        yield daemon
    finally:
        daemon.store.close()


async def ticks(daemon: Daemon, clock: Clock, seconds: range) -> None:
    """A control tick at each of these seconds after T0, and the metrics' update after it."""
    for second in seconds:
        clock.now = T0 + second
        await daemon.control.tick()
        daemon.metrics.update(daemon)


# -- the site file's section ----------------------------------------------------------------


def example_with(tmp_path: Path, **changes: Any) -> Site:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw.update(changes)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_site(path)


@pytest.mark.parametrize("section", [{}, {"metrics": None}, {"metrics": {"listen": None}}])
def test_metrics_are_off_without_an_address(tmp_path: Path, section: dict[str, Any]) -> None:
    settings = example_with(tmp_path, **section).config.metrics
    assert settings.address is None and settings.loopback
    assert not Metrics(settings, "s").enabled


@pytest.mark.parametrize(
    ("listen", "address", "loopback"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108), True),
        ("localhost:9200", ("localhost", 9200), True),
        ("[::1]:9108", ("::1", 9108), True),
        # Allowed, with a warning when the daemon starts: reachable from other machines.
        ("0.0.0.0:9108", ("0.0.0.0", 9108), False),
        ("[::]:9108", ("::", 9108), False),
        ("192.168.1.20:9108", ("192.168.1.20", 9108), False),
    ],
)
def test_a_listen_address_is_host_and_port(
    tmp_path: Path, listen: str, address: tuple[str, int], loopback: bool
) -> None:
    settings = example_with(tmp_path, metrics={"listen": listen}).config.metrics
    assert (settings.address, settings.loopback) == (address, loopback)


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("9108", "expected HOST:PORT"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:65536", "port must be a number"),
        ("127.0.0.1:0", "port must be a number"),
        ("gateway.local:9108", "IP address or localhost"),
        ("::1:9108", "IPv6 address goes in brackets"),
        (9108, "valid string"),
    ],
)
def test_a_bad_listen_address_is_a_config_error_naming_the_field(
    tmp_path: Path, listen: object, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        example_with(tmp_path, metrics={"listen": listen})
    assert caught.value.field == "metrics.listen"
    assert problem in caught.value.problem


def test_an_unknown_key_in_the_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        example_with(tmp_path, metrics={"listen": "127.0.0.1:9108", "port": 9108})
    assert caught.value.field == "metrics.port"


# -- what a scrape reports ------------------------------------------------------------------


def test_a_scrape_before_the_first_tick_has_the_site_and_no_state(tmp_path: Path) -> None:
    with daemon_of(tmp_path, Clock(T0), FakeDevice("b1", Clock(T0))) as daemon:
        seen = samples(daemon.metrics)
    info = ("flexedge_site_info", (("site", "fake-site"), ("version", version("flexedge"))))
    assert seen[info] == 1.0
    assert seen[("flexedge_tick_duration_seconds_count", ())] == 0.0
    assert not any(name.startswith("flexedge_device_") for name, _ in seen)


def test_a_scrape_after_a_tick_reads_the_daemon(tmp_path: Path) -> None:
    clock = Clock(T0)
    with daemon_of(tmp_path, clock, FakeDevice("b1", clock, soc=0.5)) as daemon:
        run(ticks(daemon, clock, range(1)))
        backlog = daemon.store.unsent_count()
        seen = samples(daemon.metrics)
    b1 = (("device", "b1"),)
    assert seen[("flexedge_device_available", b1)] == 1.0
    assert seen[("flexedge_device_errors_total", b1)] == 0.0
    assert seen[("flexedge_open_commitments", ())] == 0.0
    assert seen[("flexedge_outbox_backlog", ())] == backlog
    assert seen[("flexedge_mqtt_connected", ())] == 0.0  # the link never connects here
    assert seen[("flexedge_store_failures_total", ())] == 0.0
    assert seen[("flexedge_degraded", ())] == 0.0
    assert seen[("flexedge_last_tick_timestamp_seconds", ())] == T0


def test_a_commitment_is_open_until_reported_then_its_energy_is_counted(tmp_path: Path) -> None:
    clock = Clock(T0)
    kwh = 0.01  # 3.6 kW for 10 s
    with daemon_of(tmp_path, clock, FakeDevice("b1", clock, soc=0.5)) as daemon:

        async def scenario() -> tuple[Samples, Samples]:
            await ticks(daemon, clock, range(1))
            daemon.control.add(control_event(kwh, T0 + 1, T0 + 11))
            await ticks(daemon, clock, range(1, 6))
            during = samples(daemon.metrics)
            await ticks(daemon, clock, range(6, 32))
            return during, samples(daemon.metrics)

        during, after = run(scenario())
    assert during[("flexedge_open_commitments", ())] == 1.0
    assert ("flexedge_commitments_closed_total", (("status", "delivered"),)) not in during
    assert after[("flexedge_open_commitments", ())] == 0.0
    delivered = (("status", "delivered"),)
    assert after[("flexedge_commitments_closed_total", delivered)] == 1.0
    assert after[("flexedge_delivered_energy_kwh_total", delivered)] == pytest.approx(kwh, rel=0.02)


def test_a_device_that_stops_answering_counts_its_failed_requests(tmp_path: Path) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    with daemon_of(tmp_path, clock, battery) as daemon:

        async def scenario() -> Samples:
            await ticks(daemon, clock, range(1))
            battery.unavailable = True
            await ticks(daemon, clock, range(1, 8))
            return samples(daemon.metrics)

        seen = run(scenario())
    b1 = (("device", "b1"),)
    assert seen[("flexedge_device_available", b1)] == 0.0
    # Tried at T0 + 1, 2 and 4 (the back-off doubles): each a failed request, none forgotten
    # when the next one fails (the health's own count is of failures in a row).
    assert seen[("flexedge_device_errors_total", b1)] == len(battery.refused) == 3


def test_the_outbox_backlog_is_the_real_count_past_what_one_flush_reads(tmp_path: Path) -> None:
    clock = Clock(T0)
    with daemon_of(tmp_path, clock, FakeDevice("b1", clock, soc=0.5)) as daemon:
        with daemon.store.transaction():
            for n in range(1500):
                daemon.outbox.put("test/backlog", {"id": f"m{n}"})
        run(ticks(daemon, clock, range(1)))
        assert len(daemon.store.unsent()) == 1000  # what a flush reads at once
        seen = samples(daemon.metrics)
        assert seen[("flexedge_outbox_backlog", ())] == daemon.store.unsent_count() >= 1500


def test_a_log_that_takes_no_write_shows_degraded_and_counts_failures(tmp_path: Path) -> None:
    clock = Clock(T0)
    with daemon_of(tmp_path, clock, FakeDevice("b1", clock, soc=0.5)) as daemon:
        daemon.state = "online"
        run(ticks(daemon, clock, range(1)))
        assert samples(daemon.metrics)[("flexedge_degraded", ())] == 0.0
        remount_read_only(daemon.store)
        run(ticks(daemon, clock, range(1, 3)))
        seen = samples(daemon.metrics)
    assert seen[("flexedge_degraded", ())] == 1.0
    assert seen[("flexedge_store_failures_total", ())] == daemon.store.failures >= 2


def test_a_tick_is_timed_and_its_lateness_measured_from_its_scheduled_time(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    with daemon_of(tmp_path, clock, FakeDevice("b1", clock, soc=0.5)) as daemon:
        metrics = daemon.metrics
        # Scheduled every second from a start 10.3 s ago: a tick starting now is 0.3 s late.
        metrics.ticks_from(time.time() - 10.3, 1.0)
        metrics.tick_done(metrics.tick_started(), daemon)
        seen = samples(metrics)
    assert seen[("flexedge_device_available", (("device", "b1"),))] == 0.0  # never read
    assert seen[("flexedge_poll_jitter_seconds_count", ())] == 1.0
    assert 0.3 <= seen[("flexedge_poll_jitter_seconds_sum", ())] < 0.4
    assert seen[("flexedge_tick_duration_seconds_count", ())] == 1.0
    assert seen[("flexedge_tick_duration_seconds_sum", ())] < 0.1


def test_without_an_address_nothing_listens_and_no_state_is_read(tmp_path: Path) -> None:
    clock = Clock(T0)
    daemon = Daemon(fake_site(tmp_path), clock, devices={"b1": FakeDevice("b1", clock)})
    try:
        daemon.metrics.start()  # binds nothing: this tier refuses sockets
        run(ticks(daemon, clock, range(1)))
        assert daemon.metrics.snapshot is None
    finally:
        daemon.store.close()
