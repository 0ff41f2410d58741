"""`flexedge prequalify` on a running site: refused while the battery carries a commitment;
otherwise the daemon holds the battery out of dispatch (writes nothing to it) while the test
drives it, and takes it back after."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run
from tests.support.site_process import RunningSite, open_market, running_site, slot_with

SLOT = 30


@pytest.fixture
def site(broker: PrivateBroker, tmp_path: Path) -> Iterator[RunningSite]:
    with running_site(tmp_path, broker, slot_seconds=SLOT) as running:
        yield running


def prequalify(site: RunningSite, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flexedge",
            "prequalify",
            "--config",
            str(site.site_file),
            "--device",
            "battery-1",
            "--profile",
            "step",
            "--hold",
            "2s",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(180)
def test_prequalify_waits_for_the_commitments_then_runs_with_the_daemon_out_of_the_way(
    site: RunningSite, tmp_path: Path
) -> None:
    async def with_a_commitment() -> tuple[subprocess.CompletedProcess[str], str]:
        market = await open_market(site)
        try:
            start = await slot_with(SLOT, 20)
            ack = await market.ack_for(market.control("tariff-1", start, 0.002, 0.1), 10)
            refused = prequalify(site, tmp_path)
            await market.report_for(ack["commitment_id"], SLOT + 15)
            return refused, str(ack["commitment_id"])
        finally:
            await market.stop()

    refused, cid = run(with_a_commitment())
    assert refused.returncode == 1 and f"carries commitments {cid}" in refused.stderr

    done = prequalify(site, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "held out of dispatch by the daemon" in done.stdout
    record = json.loads((tmp_path / "prequalify-battery-1-step.json").read_text())
    [up, back] = record["steps"]
    assert up["to_kw"] == 5.0 and up["to_100_s"] is not None and up["to_100_s"] < 0.5
    # The daemon did not fight the test (the battery followed the profile: it writes a held
    # battery nothing) and has taken it back.
    assert back["to_kw"] == 0.0 and back["to_100_s"] is not None
    status = subprocess.run(
        [sys.executable, "-m", "flexedge", "status", "--config", str(site.site_file), "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(status.stdout)["holds"] == []
