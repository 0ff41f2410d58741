"""`flexedge prequalify --write` against the demo site's simulated battery over Modbus TCP: the
figures it measured (0.5 s delay and 5 kW/s in the simulator) land in the site file's
`response` block, and the daemon's assets plan with them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flexedge.cli.main import main as cli_main
from flexedge.config.loader import load_site
from flexedge.controller.daemon.assets import asset_for
from flexedge.simulators.devices.modbus_server import serve_site
from tests.support.harness import demo_site_file, run


@pytest.mark.timeout(60)
def test_the_measured_figures_are_written_to_the_site_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = demo_site_file(tmp_path)
    site = load_site(site_file)
    args = ["prequalify", "--config", str(site_file), "--device", "battery-1"]
    args += ["--hold", "3s", "--out", str(tmp_path), "--no-daemon", "--write"]

    async def serve_and_run() -> int:
        sim = await serve_site(site)
        try:
            return await asyncio.to_thread(cli_main, args)
        finally:
            await sim.stop()

    assert run(serve_and_run()) == 0
    out = capsys.readouterr().out
    assert "response figures: delay" in out and f"to {site_file}" in out
    battery = next(d for d in load_site(site_file).config.devices if d.name == "battery-1")
    figures = asset_for(battery).response
    assert 0.4 <= figures.delay_s <= 1.0  # the simulator's 0.5 s, sampled at 10 Hz
    assert figures.ramp_kw_per_s is not None and 3.5 <= figures.ramp_kw_per_s <= 6.5
    assert "# measured by flexedge prequalify --profile step" in site_file.read_text()
