"""A user's mistake ends in one line naming the file, field, port or path, and an exit code
that tells a configuration error (78, do not restart) from a transient one (75)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from flexedge.cli.exit_codes import CONFIG, TEMPFAIL
from flexedge.config.loader import EXAMPLE_SITE
from flexedge.tools.harness.broker import free_port
from tests.support.harness import write_site_file


def flexedge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def example(tmp_path: Path, **changes: object) -> Path:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw.update(changes)
    return write_site_file(tmp_path, raw)


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *names: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    for name in names:
        assert name in result.stderr


def test_missing_or_malformed_site_file_with_overrides(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = flexedge("run", "--config", str(missing), "--db", str(tmp_path / "x.sqlite"))
    assert_one_line(result, CONFIG, str(missing), "not found")
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("site: [\n", encoding="utf-8")
    result = flexedge("status", "--config", str(malformed), "--mqtt", "127.0.0.1:1883")
    assert_one_line(result, CONFIG, str(malformed), "not valid YAML")


def test_a_log_path_that_cannot_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    site = example(tmp_path, log_db=str(blocker / "logs" / "site.sqlite"))
    result = flexedge("run", "--config", str(site))
    assert_one_line(result, CONFIG, str(site), "log_db", str(blocker / "logs"))


def test_a_busy_simulator_port(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
        raw["devices"][0]["port"] = port
        site = write_site_file(tmp_path, raw)
        result = flexedge("sim", "--config", str(site))
    assert_one_line(result, TEMPFAIL, raw["devices"][0]["name"], f"127.0.0.1:{port}", "in use")


def test_no_broker_is_transient(tmp_path: Path) -> None:
    port = free_port()
    result = flexedge(
        "status", "--config", str(EXAMPLE_SITE), "--mqtt", f"127.0.0.1:{port}", "--timeout", "1"
    )
    assert_one_line(result, TEMPFAIL, f"127.0.0.1:{port}")
    assert "DEBUG" not in result.stderr
    # -v after the subcommand: debug logging, which shows where the error came from.
    result = flexedge(
        "status",
        "--config",
        str(EXAMPLE_SITE),
        "--mqtt",
        f"127.0.0.1:{port}",
        "--timeout",
        "1",
        "-v",
    )
    assert result.returncode == TEMPFAIL
    assert "DEBUG" in result.stderr
    assert "status failed" in result.stderr


def test_config_check_ok_in_one_line() -> None:
    result = flexedge("config", "check", str(EXAMPLE_SITE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith(f"{EXAMPLE_SITE}: OK: site example-site, 1 devices")


def test_config_check_names_every_problem(tmp_path: Path) -> None:
    bad_map = tmp_path / "bad-map.yaml"
    bad_map.write_text("model: x\nkind: battery\npoints: {soc: {address: -1}}\n", "utf-8")
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    battery = raw["devices"][0]
    raw["devices"] = [
        battery,
        {**battery, "register_map": str(bad_map)},
        {**battery, "register_map": "no-such-map"},
    ]
    raw["asset_registry"] = {"ghost": {"demand_rate_ct_per_kwh": 1, "supply_rate_ct_per_kwh": 1}}
    site = write_site_file(tmp_path, raw)
    result = flexedge("config", "check", str(site))
    assert result.returncode == CONFIG, result.stdout
    lines = result.stderr.splitlines()
    assert any("devices[1].name" in line and "used twice" in line for line in lines)
    assert any("asset_registry.ghost" in line for line in lines)
    assert any(str(bad_map) in line and "points.soc" in line for line in lines)
    assert any("devices[2]" in line and "no-such-map.yaml" in line for line in lines)
    assert all(line.startswith(str(site)) for line in lines)
    assert "Traceback" not in result.stderr


def test_config_check_of_a_file_that_does_not_validate_still_checks_its_maps(
    tmp_path: Path,
) -> None:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw["slot_seconds"] = 1
    raw["devices"][0]["register_map"] = "no-such-map"
    raw["devices"][0]["capacity_kwh"] = -5
    site = write_site_file(tmp_path, raw)
    result = flexedge("config", "check", str(site))
    assert result.returncode == CONFIG
    assert "slot_seconds" in result.stderr
    assert "capacity_kwh" in result.stderr
    assert "no-such-map.yaml" in result.stderr
    assert "3 problem(s)" in result.stderr


def test_version() -> None:
    from importlib.metadata import version

    result = flexedge("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"flexedge {version('flexedge')}"
