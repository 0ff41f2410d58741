"""The operator's CLI against a running daemon over MQTT v5 request/response."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


def order_topic(site: RunningSite, direction: str) -> str:
    return f"{site.prefix}/{site.site}/market/balancing-order/tariff-1/{direction}"


def retained_order(site: RunningSite, direction: str = "up") -> dict[str, Any]:
    """What the broker retains on tariff-1's order topic of `direction` ({"_cleared": True}:
    nothing, the topic was cleared)."""

    async def listen() -> dict[str, Any]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            return await market.wait_for(lambda m: m["_topic"] == order_topic(site, direction), 5)
        except TimeoutError:
            return {"_cleared": True}  # a cleared retained topic sends nothing to a newcomer
        finally:
            await market.stop()

    return run(listen())


def retained_becomes(
    site: RunningSite, direction: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    deadline = time.time() + 5
    order = retained_order(site, direction)
    while not check(order) and time.time() < deadline:
        order = retained_order(site, direction)
    return order


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
        (
            ["--tariff", "tariff-1", "--withdraw", "up", "--ratio", "-0.5"],
            "withdraw up: exercise_ratio -0.5 is a down order, not an up order",
        ),
        (
            ["--tariff", "tariff-1", "--direction", "up", "--ratio", "-0.5"],
            "exercise_ratio -0.5 is a down order, not an up order",
        ),
        (["--tariff", "tariff-1", "--withdraw", "down"], "tariff 'tariff-1' has no down order"),
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


def test_up_and_down_orders_stand_side_by_side_and_bound_events_of_their_sign(
    site: RunningSite,
) -> None:
    """A down order leaves the up order in force; control events of both signs are accepted
    and delivered, each bounded by the order of its sign; withdrawing the up order clears its
    retained topic and an up event is then rejected with that reason."""
    result = cli(site, "order", "--tariff", "tariff-1", "--ratio", "-0.5", "--price", "-0.1")
    assert result.returncode == 0, result.stderr
    assert "down order of tariff-1: exercise_ratio -0.5" in result.stdout
    assert "in force: up exercise_ratio 1.5" in result.stdout
    assert "  published: exercise_ratio -0.5" in result.stdout
    down = retained_becomes(site, "down", lambda o: o.get("exercise_ratio") == -0.5)
    up = retained_order(site, "up")
    assert (down["exercise_ratio"], down["price_per_kwh"]) == (-0.5, -0.1)
    assert (up["exercise_ratio"], up["price_per_kwh"]) == (1.5, 0.12)

    async def exercise(*kwhs: float) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            now = time.time()
            slot = now - now % SLOT
            if slot + SLOT - now < 8:  # leave the events room to be delivered in their slot
                await asyncio.sleep(slot + SLOT - now)
                slot += SLOT
            refs = [market.control("tariff-1", slot, kwh, payment=0.0) for kwh in kwhs]
            acks = [await market.ack_for(ref) for ref in refs]
            reports = []
            for ack in acks:
                cid = ack.get("commitment_id")
                reports.append(await market.report_for(cid, SLOT + 15) if cid else None)
            return list(zip(acks, reports, strict=True))
        finally:
            await market.stop()

    both = run(exercise(0.002, -0.002))
    for (ack, report), kwh in zip(both, (0.002, -0.002), strict=True):
        assert ack["status"] == "accepted", ack
        assert report is not None and report["accepted_kwh"] == kwh
        assert report["status"] == "delivered", report

    result = cli(site, "order", "--tariff", "tariff-1", "--withdraw", "up")
    assert result.returncode == 0, result.stderr
    assert "up order of tariff-1: withdrawn" in result.stdout
    assert retained_becomes(site, "up", lambda o: "_cleared" in o) == {"_cleared": True}
    [(rejected, _)] = run(exercise(0.002))
    assert rejected["status"] == "rejected"
    assert "tariff 'tariff-1' has no up order in force" in rejected["reason"]
    assert retained_order(site, "down")["exercise_ratio"] == -0.5

    # Put the up order back for the tests that follow.
    result = cli(site, "order", "--tariff", "tariff-1", "--ratio", "1.5", "--price", "0.12")
    assert result.returncode == 0, result.stderr
    assert retained_becomes(site, "up", lambda o: o.get("exercise_ratio") == 1.5)
