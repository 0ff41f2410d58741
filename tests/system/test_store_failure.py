"""A log that cannot be written, on a running daemon: the market message that arrives meanwhile
is not acknowledged to the broker, the site says it is degraded and why (retained status,
`flexedge status`, its log), and the message is decided and answered once, exactly once,
when the log takes writes again, or by the next daemon when this one dies first.

The failure is the kernel's: the daemon's file-size limit (RLIMIT_FSIZE) is set to 0 from
outside with prlimit, so every write it makes to a file fails (EFBIG), as on a full disk.
Python ignores SIGXFSZ, so the process lives on; sockets and pipes are not files.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import run
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 30


@pytest.fixture
def site(broker: PrivateBroker, tmp_path: Path) -> Iterator[RunningSite]:
    with running_site(tmp_path, broker, piped_log=True, slot_seconds=SLOT) as running:
        yield running


@contextmanager
def no_file_writes(site: RunningSite) -> Iterator[None]:
    """Every file write of the running daemon fails until the block ends."""
    assert site.daemon is not None
    pid = site.daemon.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        if site.daemon.poll() is None:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def degraded_with_held_message(message: dict[str, Any]) -> bool:
    return (
        message.get("type") == "status"
        and message["state"] == "degraded"
        and any("wait for the log" in p for p in message["problems"])
    )


def acks_for(market: MarketClient, ref: str) -> list[dict[str, Any]]:
    return [m for m in market.seen if m.get("type") == "ack" and m.get("ref") == ref]


def operator_status(site: RunningSite) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flexedge", "status", "--config", str(site.site_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# About 35 s: a slot with 20 s left, a few seconds held, then the window and its report.
@pytest.mark.timeout(180)
def test_a_message_the_log_cannot_take_waits_unacked_and_is_answered_once_after(
    site: RunningSite,
) -> None:
    async def scenario() -> tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        market = await open_market(site)
        try:
            start = await slot_with(SLOT, 20, 0.5)
            with no_file_writes(site):
                ref = market.control("tariff-1", start, 0.01, payment=0.2)
                await market.wait_for(degraded_with_held_message, 15)
                shown = operator_status(site)  # answered from memory meanwhile
                assert acks_for(market, ref) == []
            ack = await market.ack_for(ref, 15)
            await market.wait_for(
                lambda m: m.get("type") == "status" and m["state"] == "online", 15
            )
            report = await market.report_for(ack["commitment_id"], SLOT + 15)
            return shown, ack, report, acks_for(market, ref)
        finally:
            await market.stop()

    shown, ack, report, acks = run(scenario())
    assert "degraded" in shown and "problem: cannot write the SQLite log" in shown
    assert ack["status"] == "accepted"
    assert acks == [ack]  # one answer, once the log took it
    # Dispatched late (after the hold) but the closed loop caught up inside the window.
    assert report["status"] == "delivered"
    assert site.query("SELECT COUNT(*) FROM inbound")[0][0] == 1
    log = (site.workdir / "daemon.log").read_text(errors="replace")
    assert "the site is degraded until it can" in log and "is written again" in log


@pytest.mark.timeout(180)
def test_a_held_message_is_redelivered_by_the_broker_to_the_next_daemon(
    site: RunningSite,
) -> None:
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        market = await open_market(site)
        try:
            start = await slot_with(SLOT, 20, 0.5)
            with no_file_writes(site):
                ref = market.control("tariff-1", start, 0.01, payment=0.2)
                await market.wait_for(degraded_with_held_message, 15)
                site.kill_daemon()  # it never acknowledged the message to the broker
            site.start_daemon()
            ack = await market.ack_for(ref, 30)
            await market.report_for(ack["commitment_id"], SLOT + 30)
            return ack, acks_for(market, ref)
        finally:
            await market.stop()

    ack, acks = run(scenario())
    assert ack["status"] == "accepted"
    assert acks == [ack]
    assert site.query("SELECT COUNT(*) FROM inbound")[0][0] == 1
    assert site.query("SELECT COUNT(*) FROM commitments")[0][0] == 1
