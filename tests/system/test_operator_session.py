"""An operator's session against a running site, over a broker that needs a password and
enforces the shipped ACL: pause and resume, a hold and its release, the reads, the safe state
followed by `flexedge reports --follow`, refusals that exit 1 with the reason, and a pause
that outlives a restart of the daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flexedge.config.mqtt_settings import PASSWORD_ENV
from tests.support.harness import run, wait_for
from tests.support.site_process import RunningSite, slot_with
from tests.system.test_broker_acl import LOGINS, acl_broker, as_market, operator, site
from tests.system.test_broker_acl import operator_file as operator_file

__all__ = ["acl_broker", "operator_file", "site"]  # the fixtures this module runs on

SLOT = 20


def ok(config: Path, *args: str) -> str:
    result = operator(config, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def status(config: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ok(config, "status", "--json"))
    return body


def line_with(stream: Any, text: str, max_lines: int = 20) -> str:
    """The first line of `stream` that holds `text` (the log lines before it are skipped)."""
    for _ in range(max_lines):
        line: str = stream.readline()
        if text in line or not line:
            return line
    return ""


def battery_at(config: Path, kw: float) -> bool:
    p = status(config)["assets"]["battery-1"]["p_kw"]
    return p is not None and abs(p - kw) < 0.05


# About 90 s: two control events in 20-s slots, a hold, the safe state and a restart.
@pytest.mark.timeout(300)
def test_an_operators_session(site: RunningSite, operator_file: Path) -> None:
    config = operator_file
    refused = operator(config, "resume")
    assert refused.returncode == 1 and "resume: not paused" in refused.stderr

    assert ok(config, "pause").strip() == "mode: paused"
    assert status(config)["state"] == "paused"

    async def control_event() -> dict[str, Any]:
        market = as_market(site)
        await market.start()
        try:
            start = await slot_with(SLOT, 15)
            ack: dict[str, Any] = await market.ack_for(
                market.control("tariff-1", start, 0.002, payment=0.1), 10
            )
            return ack
        finally:
            await market.stop()

    paused_ack = run(control_event())
    assert paused_ack["status"] == "rejected" and paused_ack["reason"].startswith("paused:")
    assert ok(config, "resume").strip() == "mode: running"

    held = ok(config, "hold", "battery-1", "1.5", "--for", "2m")
    assert held.startswith("battery-1: held at 1.5 kW until ")
    wait_for(lambda: battery_at(config, 1.5), 15, "the battery at its hold")
    assert "held at 1.5 kW" in ok(config, "devices")
    assert [h["kw"] for h in status(config)["holds"]] == [1.5]
    bad = operator(config, "hold", "nope", "1", "--for", "1m")
    assert bad.returncode == 1 and "unknown device 'nope'" in bad.stderr
    assert "released" in ok(config, "release", "battery-1")
    wait_for(lambda: battery_at(config, 0.0), 15, "the battery back to dispatch (idle)")

    ack = run(control_event())
    assert ack["status"] == "accepted"
    assert ack["commitment_id"] in ok(config, "commitments")

    reports = ["reports", "--config", str(config), "--last", "1", "--follow"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "flexedge.cli.main", *reports],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, PASSWORD_ENV: LOGINS["operator"]},
    )
    try:
        assert follow.stderr is not None and follow.stdout is not None
        assert line_with(follow.stderr, "following delivery reports")  # subscribed
        safe = ok(config, "safe")
        assert f"ended early and reported: {ack['commitment_id']}" in safe
        line = follow.stdout.readline()  # the report as it went out
        assert line.startswith(ack["commitment_id"]) and "safe state" in line, line
    finally:
        follow.terminate()
        follow.wait(10)
    assert status(config)["state"] == "safe"
    wait_for(lambda: battery_at(config, 0.0), 15, "the battery at its safe setpoint")
    assert ok(config, "resume").strip() == "mode: running"

    ok(config, "pause")
    site.kill_daemon()
    site.start_daemon()

    def paused_again() -> bool:
        result = operator(config, "status", "--json", "--timeout", "2")
        return result.returncode == 0 and json.loads(result.stdout)["state"] == "paused"

    started = time.monotonic()
    wait_for(paused_again, 30, "the restarted daemon, still paused")
    assert time.monotonic() - started < 30
    assert ok(config, "resume").strip() == "mode: running"
