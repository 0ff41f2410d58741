"""`flexedge prequalify` against the demo site's simulated battery, heat pump and generator
over Modbus TCP, with no daemon: a step of each, measured as the simulators are set up (the
battery waits 0.5 s and ramps at 5 kW/s, the generator waits 0.5 s and ramps at 5 kW/s, the
heat pump waits 0.5 s and follows through a 1-s lag)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexedge.cli.main import main as cli_main
from flexedge.config.loader import load_site
from flexedge.simulators.devices.modbus_server import serve_site
from flexedge.tools.prequalify.analysis import Result, analyse
from flexedge.tools.prequalify.runner import run_profile
from tests.support.harness import demo_site_file, run

HOLD_S = 5.0  # long enough for the heat pump to settle through its lag


@pytest.mark.timeout(120)
def test_a_step_of_each_kind_is_measured_as_the_simulators_respond(tmp_path: Path) -> None:
    site = load_site(demo_site_file(tmp_path))

    async def scenario() -> dict[str, Result]:
        sim = await serve_site(site)
        try:
            return {
                name: analyse(r.profile, r.samples)
                for name in ("battery-1", "heat-pump", "genset")
                for r in [await run_profile(site, name, "step", HOLD_S, use_daemon=False)]
            }
        finally:
            await sim.stop()

    results = run(scenario())
    battery, heat_pump, genset = (results[n] for n in ("battery-1", "heat-pump", "genset"))
    up = battery.steps[0]
    assert (up.from_kw, up.to_kw) == (0.0, 5.0)
    assert up.delay_s is not None and up.to_90_s is not None
    assert 0.4 <= up.delay_s <= 0.9  # its 0.5 s, sampled at 10 Hz
    assert 1.2 <= up.to_90_s <= 1.9  # 0.5 s + 0.9 s of ramp
    shed = heat_pump.steps[0]
    assert shed.from_kw == pytest.approx(-5.0, abs=0.2) and shed.to_kw > shed.from_kw
    assert shed.delay_s is not None and 0.4 <= shed.delay_s <= 0.9
    assert shed.to_90_s is not None and 2.3 <= shed.to_90_s <= 3.5  # 0.5 s + 2.3 lags
    start = genset.steps[0]
    assert start.to_kw == 10.0 and start.to_90_s is not None
    assert start.delay_s is not None and 0.4 <= start.delay_s <= 0.9
    assert 1.9 <= start.to_90_s <= 2.8  # 0.5 s + 1.8 s of ramp


@pytest.mark.timeout(60)
def test_the_command_prints_the_table_and_writes_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = demo_site_file(tmp_path)
    site = load_site(site_file)

    async def serve_and_run() -> int:
        sim = await serve_site(site)
        try:
            import asyncio

            return await asyncio.to_thread(
                cli_main,
                [
                    "prequalify",
                    "--config",
                    str(site_file),
                    "--device",
                    "battery-1",
                    "--profile",
                    "double-step",
                    "--hold",
                    "2s",
                    "--out",
                    str(tmp_path),
                    "--no-daemon",
                ],
            )
        finally:
            await sim.stop()

    assert run(serve_and_run()) == 0
    out = capsys.readouterr().out
    assert "prequalify battery-1 (battery), profile double-step" in out
    assert "tracking error per second" in out and "energy up:" in out and "energy down:" in out
    record = json.loads((tmp_path / "prequalify-battery-1-double-step.json").read_text())
    assert [(s["from_kw"], s["to_kw"]) for s in record["steps"]] == [
        (0.0, 5.0),
        (5.0, -5.0),
        (-5.0, 0.0),
    ]
    assert (tmp_path / "prequalify-battery-1-double-step.png").exists()


def test_an_unknown_device_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        ["prequalify", "--config", str(demo_site_file(tmp_path)), "--device", "nope", "--no-daemon"]
    )
    assert code == 1 and "unknown device 'nope'" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_device_that_does_not_answer_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_file = demo_site_file(tmp_path)  # nothing serves its ports
    code = cli_main(["prequalify", "--config", str(site_file), "--device", "genset", "--no-daemon"])
    err = capsys.readouterr().err
    assert code == 1 and "device genset: cannot connect" in err, err


def test_an_unknown_profile_is_refused_naming_the_choices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(
            [
                "prequalify",
                "--config",
                str(demo_site_file(tmp_path)),
                "--device",
                "genset",
                "--profile",
                "sine",
            ]
        )
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "'sine'" in err and "double-step" in err, err
