"""Least privilege on the broker: the shipped ACL (flexedge/config/mosquitto/site.acl) with its
three accounts. The daemon runs as `site`; the market account's set-order is dropped by the
broker and changes nothing, the operator's goes through, and a control event from the market
account is acked and delivered. The operator logs in with FLEXEDGE_MQTT_PASSWORD."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.config.loader import SITE_ACL
from flexedge.config.mqtt_settings import PASSWORD_ENV
from flexedge.contract.messages import iso
from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import run, write_site_file
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 20
SITE_ID = f"acl{uuid.uuid4().hex[:8]}"
LOGINS = {"site": "site-Pa55", "market": "market-Pa55", "operator": "operator-Pa55"}


def site_acl(folder: Path) -> Path:
    """The shipped ACL for this test's site, adapted as the README says."""
    text = SITE_ACL.read_text(encoding="utf-8")
    assert "flexedge/example-site/" in text
    path = folder / "site.acl"
    path.write_text(text.replace("flexedge/example-site/", f"flexedge/{SITE_ID}/"), "utf-8")
    return path


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    acl = site_acl(tmp_path_factory.mktemp("acl"))
    with PrivateBroker(users=LOGINS, acl_file=acl) as private:
        yield private


@pytest.fixture(scope="module")
def site(
    acl_broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("acl-site")
    mqtt = {
        "host": acl_broker.host,
        "port": acl_broker.port,
        "prefix": "flexedge",
        "username": "site",
        "password": LOGINS["site"],
    }
    with running_site(workdir, acl_broker, site=SITE_ID, slot_seconds=SLOT, mqtt=mqtt) as running:
        yield running


@pytest.fixture(scope="module")
def operator_file(site: RunningSite) -> Path:
    """The site file as the operator's machine has it: its own account, no password in it."""
    raw = yaml.safe_load(site.site_file.read_text(encoding="utf-8"))
    raw["mqtt"]["username"] = "operator"
    del raw["mqtt"]["password"]
    return write_site_file(site.workdir, raw, name="operator.yaml")


def operator(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, PASSWORD_ENV: LOGINS["operator"]}
    return subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", args[0], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def orders(config: Path) -> list[dict[str, Any]]:
    status = operator(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    found: list[dict[str, Any]] = json.loads(status.stdout)["orders"]
    return found


def as_market(site: RunningSite) -> MarketClient:
    return MarketClient(
        site.host, site.port, site.prefix, site.site, username="market", password=LOGINS["market"]
    )


async def published_and_acked(
    client: MarketClient, suffix: str, body: dict[str, Any], response_topic: str | None = None
) -> None:
    """Publish on `suffix` and wait for the broker's PUBACK: by then it has routed the
    message or dropped it, so anything sent after it reaches the daemon after it."""
    data = json.dumps(body).encode()
    mid = client.link.publish(
        f"{client.base}/{suffix}", data, qos=1, response_topic=response_topic, correlation_data=b"x"
    )
    assert mid is not None
    assert await client.link.wait_published(mid, 10)


def publisher(site: RunningSite, account: str) -> MarketClient:
    """A client with `account`'s login that only publishes (the operator's account may
    not subscribe to what a MarketClient reads)."""
    return MarketClient(
        site.host, site.port, site.prefix, site.site, username=account, password=LOGINS[account]
    )


def test_the_site_runs_as_its_account_and_the_operator_reads_its_status(
    site: RunningSite, operator_file: Path
) -> None:
    result = operator(operator_file, "status")
    assert result.returncode == 0, result.stderr
    assert f"site {site.site}: online" in result.stdout


def test_the_market_account_cannot_change_an_order(site: RunningSite, operator_file: Path) -> None:
    before = orders(operator_file)
    assert [(o["direction"], o["exercise_ratio"]) for o in before] == [("up", 1.5)]
    order = {"tariff_id": "tariff-1", "exercise_ratio": 1.1}
    # A reply topic the site may publish on, as an attacker who knows the ACL would give.
    reply_to = f"flexedge/{SITE_ID}/cmd-reply/forged"

    async def send_as(account: str) -> None:
        client = publisher(site, account)
        await client.link.start()
        try:
            await published_and_acked(client, "cmd/set-order", order, reply_to)
        finally:
            await client.link.stop()

    run(send_as("market"))
    # The operator's request goes after the forged one was dropped: had the broker let it
    # through, the daemon would have taken it first.
    assert orders(operator_file) == before
    assert site.query("SELECT COUNT(*) FROM events WHERE kind = 'set-order'") == [(0,)]

    # The very same message with the operator's login is taken: the ACL made the difference.
    run(send_as("operator"))
    assert [o["exercise_ratio"] for o in orders(operator_file)] == [1.1]
    assert site.query("SELECT COUNT(*) FROM events WHERE kind = 'set-order'") == [(1,)]
    back = operator(operator_file, "order", "--tariff", "tariff-1", "--ratio", "1.5")
    assert back.returncode == 0, back.stderr


def test_the_operator_account_can_change_the_order(site: RunningSite, operator_file: Path) -> None:
    result = operator(operator_file, "order", "--tariff", "tariff-1", "--ratio", "1.2")
    assert result.returncode == 0, result.stderr
    assert "up order of tariff-1: exercise_ratio 1.2" in result.stdout
    assert "published: exercise_ratio 1.2\n" in result.stdout
    assert [o["exercise_ratio"] for o in orders(operator_file)] == [1.2]

    # The market account reads the standing order the site now publishes.
    async def retained() -> dict[str, Any]:
        market = as_market(site)
        await market.start()
        try:
            topic = f"{market.base}/market/balancing-order/tariff-1/up"
            return await market.wait_for(
                lambda m: m["_topic"] == topic and m.get("exercise_ratio") == 1.2, 10
            )
        finally:
            await market.stop()

    assert run(retained())["price_per_kwh"] == 0.12
    back = operator(operator_file, "order", "--tariff", "tariff-1", "--ratio", "1.5")
    assert back.returncode == 0, back.stderr


def test_a_control_event_from_the_market_account_is_acked_and_delivered(
    site: RunningSite,
) -> None:
    async def exercise() -> tuple[dict[str, Any], dict[str, Any]]:
        market = await open_market(site, username="market", password=LOGINS["market"])
        try:
            slot = await slot_with(SLOT, 10)
            ref = market.control("tariff-1", slot, 0.002, payment=0.0)
            ack = await market.ack_for(ref)
            report = await market.report_for(ack["commitment_id"], SLOT + 15)
            return ack, report
        finally:
            await market.stop()

    ack, report = run(exercise())
    assert ack["status"] == "accepted", ack
    assert report["status"] == "delivered", report
    assert report["accepted_kwh"] == 0.002


def test_the_operator_account_cannot_pose_as_the_market(site: RunningSite) -> None:
    """A control event published with the operator's login is dropped: no ack for it, while
    the market's own event sent right after it is answered."""

    async def both() -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
        forger = publisher(site, "operator")
        market = as_market(site)
        await forger.link.start()
        await market.start()
        try:
            now = time.time()
            forged_id = f"forged-{uuid.uuid4().hex[:8]}"
            forged = {
                "v": 1,
                "type": "balancing_control",
                "id": forged_id,
                "tariff_id": "tariff-1",
                "timeslot_start": iso(now - now % SLOT + SLOT),
                "kwh": 0.001,
                "payment": 0.0,
            }
            await published_and_acked(forger, "market/balancing-control", forged)
            ref = market.control("tariff-1", now - now % SLOT + SLOT, 0.001, payment=0.0)
            # The forged one reached the broker first: had it been let through, its ack
            # would have come before this one.
            ack = await market.ack_for(ref)
            return forged_id, ack, list(market.seen)
        finally:
            await market.stop()
            await forger.link.stop()

    forged_id, ack, seen = run(both())
    assert ack["type"] == "ack"
    assert not [m for m in seen if m.get("ref") == forged_id]
    assert site.query("SELECT COUNT(*) FROM inbound WHERE msg_id = ?", forged_id) == [(0,)]
