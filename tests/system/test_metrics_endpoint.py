"""The metrics endpoint of a running site, scraped over real HTTP: values that follow the
site (a device that answers, a control event open then delivered), and a busy port that
stops the start with one line and the transient exit code."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flexedge.cli.exit_codes import TEMPFAIL
from flexedge.config.loader import EXAMPLE_SITE
from flexedge.tools.harness.broker import PrivateBroker, free_port
from tests.support.harness import run, wait_for, write_site_file
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 10
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def site(broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("metrics")
    listen = f"127.0.0.1:{free_port()}"
    with running_site(workdir, broker, slot_seconds=SLOT, metrics={"listen": listen}) as running:
        yield running


def url_of(site: RunningSite) -> str:
    raw = yaml.safe_load(site.site_file.read_text(encoding="utf-8"))
    return f"http://{raw['metrics']['listen']}/metrics"


def scrape(site: RunningSite) -> Samples:
    with urllib.request.urlopen(url_of(site), timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scraped(site: RunningSite, key: tuple[str, tuple[tuple[str, str], ...]]) -> float | None:
    return scrape(site).get(key)


BATTERY = (("device", "battery-1"),)


@pytest.mark.timeout(60)
def test_a_scrape_shows_the_running_site(site: RunningSite) -> None:
    # A few scheduled ticks, so that their timing is in.
    wait_for(
        lambda: (scraped(site, ("flexedge_tick_duration_seconds_count", ())) or 0) >= 3,
        15,
        "three timed ticks",
        interval=0.2,
    )
    seen = scrape(site)
    assert seen[("flexedge_device_available", BATTERY)] == 1.0
    assert seen[("flexedge_device_errors_total", BATTERY)] == 0.0
    assert seen[("flexedge_mqtt_connected", ())] == 1.0
    assert seen[("flexedge_degraded", ())] == 0.0
    assert seen[("flexedge_store_failures_total", ())] == 0.0
    info = ("flexedge_site_info", (("site", site.site), ("version", version("flexedge"))))
    assert seen[info] == 1.0
    # A tick on a simulated battery takes milliseconds and starts on time, give or take
    # what a loaded CI machine adds; neither comes near the 1-s control period.
    ticks = seen[("flexedge_tick_duration_seconds_count", ())]
    assert 0 < seen[("flexedge_tick_duration_seconds_sum", ())] / ticks < 0.5
    late = seen[("flexedge_poll_jitter_seconds_count", ())]
    assert late >= 1 and 0 <= seen[("flexedge_poll_jitter_seconds_sum", ())] / late < 0.5
    assert abs(seen[("flexedge_last_tick_timestamp_seconds", ())] - time.time()) < 10

    def backlog_matches_the_log() -> bool:
        [(unsent,)] = site.query("SELECT COUNT(*) FROM outbox WHERE sent_ts IS NULL")
        return bool(scraped(site, ("flexedge_outbox_backlog", ())) == unsent)

    # Both move as messages go out: equal once they are read between two ticks.
    wait_for(backlog_matches_the_log, 15, "the backlog to be the log's count", interval=0.2)


@pytest.mark.timeout(90)
def test_a_control_event_is_open_then_delivered_in_the_metrics(site: RunningSite) -> None:
    delivered = ("flexedge_commitments_closed_total", (("status", "delivered"),))
    energy = ("flexedge_delivered_energy_kwh_total", (("status", "delivered"),))
    before = scrape(site)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], float]:
        market = await open_market(site)
        try:
            order = await market.wait_for(lambda m: m.get("type") == "balancing_order", 10)
            start = await slot_with(SLOT, 7, after_start_s=0.5)
            hours = (start + SLOT - time.time()) / 3600
            kwh = round(0.5 * (order["exercise_ratio"] - 1) * 5.0 * hours, 5)
            event_id = market.control(order["tariff_id"], start, kwh, payment=0.1)
            ack = await market.ack_for(event_id)
            # Open for the rest of its window (over 6 s), in the snapshot from the next tick.
            open_now = await asyncio.to_thread(
                wait_for,
                lambda: scraped(site, ("flexedge_open_commitments", ())) or 0.0,
                5,
                "the open commitment in the metrics",
                interval=0.2,
            )
            report = await market.report_for(ack["commitment_id"], SLOT + 10)
            return ack, report, open_now
        finally:
            await market.stop()

    ack, report, open_during = run(scenario())
    assert ack["status"] == "accepted", ack
    assert report["status"] == "delivered", report
    assert open_during == 1.0

    def counted() -> Samples:
        now = scrape(site)
        return now if now.get(delivered, 0) == before.get(delivered, 0) + 1 else {}

    after = wait_for(counted, 10, "the delivered commitment in the metrics", interval=0.2)
    assert after[("flexedge_open_commitments", ())] == 0.0
    gained = after[energy] - before.get(energy, 0.0)
    assert gained == pytest.approx(float(report["delivered_kwh"]), rel=1e-6)


def flexedge_run(site_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", "run", "--config", str(site_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_busy_metrics_port_stops_the_start_as_transient(tmp_path: Path, host: str) -> None:
    with socket.create_server((host, 0)) as taken:
        port = taken.getsockname()[1]
        raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
        raw["log_db"] = str(tmp_path / "site.sqlite")
        raw["metrics"] = {"listen": f"{host}:{port}"}
        result = flexedge_run(write_site_file(tmp_path, raw))
    assert result.returncode == TEMPFAIL, result.stderr
    assert "Traceback" not in result.stderr
    assert f"metrics endpoint (metrics.listen): cannot listen on {host}:{port}" in result.stderr
    assert "in use" in result.stderr
    # Beyond loopback: said when it starts, since the endpoint has no login.
    assert ("reachable from other machines" in result.stderr) == (host != "127.0.0.1")
