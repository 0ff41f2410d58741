"""The operator's CLI against a running daemon over MQTT v5 request/response."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import run
from tests.support.site_process import RunningSite, running_site

SLOT = 20


@pytest.fixture(scope="module")
def site(broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("operator")
    with running_site(workdir, broker, slot_seconds=SLOT) as running:
        yield running


def cli(site: RunningSite, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flexedge.cli.main",
            args[0],
            "--config",
            str(site.site_file),
            *args[1:],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def retained_order(site: RunningSite) -> dict[str, Any]:
    async def listen() -> dict[str, Any]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            return await market.wait_for(lambda m: m.get("type") == "balancing_order", 5)
        finally:
            await market.stop()

    return run(listen())


def test_status_tells_what_the_daemon_is_doing(site: RunningSite) -> None:
    result = cli(site, "status")
    assert result.returncode == 0, result.stderr
    assert f"site {site.site}: online" in result.stdout
    assert "battery-1" in result.stdout and "available=True" in result.stdout
    as_json = cli(site, "status", "--json")
    assert '"state": "online"' in as_json.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tariff", "tariff-1", "--ratio", "2.5"], "exercise_ratio"),
        (["--tariff", "tariff-1", "--ratio", "-1.01"], "exercise_ratio"),
        (["--tariff", "tariff-1", "--ratio", "0"], "exercise_ratio 0 offers nothing"),
        (["--tariff", "nope", "--ratio", "1.2"], "unknown tariff 'nope'"),
    ],
)
def test_bad_order_is_refused_and_changes_nothing(
    site: RunningSite, args: list[str], needle: str
) -> None:
    before = retained_order(site)
    result = cli(site, "order", *args)
    assert result.returncode == 1
    assert needle in result.stderr
    after = retained_order(site)
    assert (after["exercise_ratio"], after["id"]) == (before["exercise_ratio"], before["id"])
    logged = site.query(
        "SELECT detail FROM events WHERE kind = 'command-rejected' ORDER BY seq DESC LIMIT 1"
    )
    assert needle in logged[0][0]


def test_new_order_replaces_the_retained_one_and_bounds_exercises(site: RunningSite) -> None:
    result = cli(site, "order", "--tariff", "tariff-1", "--ratio", "-0.5", "--price", "-0.05")
    assert result.returncode == 0, result.stderr
    deadline = time.time() + 5
    order = retained_order(site)
    while order["exercise_ratio"] != -0.5 and time.time() < deadline:
        order = retained_order(site)
    assert (order["exercise_ratio"], order["price_per_kwh"]) == (-0.5, -0.05)

    async def exercise() -> dict[str, Any]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            now = time.time()
            ref = market.control("tariff-1", now - now % SLOT, 0.001, payment=0.0)
            ack: dict[str, Any] = await market.ack_for(ref)
            return ack
        finally:
            await market.stop()

    ack = run(exercise())
    assert ack["status"] == "rejected"
    assert "offers only down-regulation (exercise_ratio -0.5)" in ack["reason"]
