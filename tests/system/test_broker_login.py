"""A site whose broker takes only a username and password: the daemon, the simulator's fault
control and the operator's commands all log in with the site file's credentials."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flexedge.cli.exit_codes import TEMPFAIL
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import write_site_file
from tests.support.site_process import RunningSite, running_site

USER, PASSWORD = "gateway", "s3cret-Pa55"


@pytest.fixture(scope="module")
def login_broker() -> Iterator[PrivateBroker]:
    with PrivateBroker(users={USER: PASSWORD}) as private:
        yield private


@pytest.fixture(scope="module")
def site(
    login_broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("login")
    mqtt = {
        "host": login_broker.host,
        "port": login_broker.port,
        "prefix": "flexedge",
        "username": USER,
        "password": PASSWORD,
    }
    with running_site(workdir, login_broker, fault_control=True, mqtt=mqtt) as running:
        yield running


def flexedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_password(site: RunningSite, password: str) -> Path:
    raw = yaml.safe_load(site.site_file.read_text(encoding="utf-8"))
    raw["mqtt"]["password"] = password
    return write_site_file(site.workdir, raw, name="wrong-password.yaml")


def test_status_and_order_log_in_with_the_site_files_credentials(site: RunningSite) -> None:
    status = flexedge("status", "--config", str(site.site_file))
    assert status.returncode == 0, status.stderr
    assert site.site in status.stdout

    order = flexedge(
        "order", "--config", str(site.site_file), "--tariff", "tariff-1", "--ratio", "0.8"
    )
    assert order.returncode == 0, order.stderr
    assert "up order of tariff-1: exercise_ratio 0.8" in order.stdout


def test_fault_reaches_a_simulator_that_logged_in_with_the_site_file(site: RunningSite) -> None:
    result = flexedge(
        "fault", "--config", str(site.site_file), "--device", "battery-1", "--latency", "0"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("battery-1:")


def test_a_wrong_password_is_a_clear_transient_error(site: RunningSite) -> None:
    wrong = with_password(site, "not-the-password")
    for command in ("status", "order"):
        extra = ["--tariff", "tariff-1", "--ratio", "0.8"] if command == "order" else []
        result = flexedge(command, "--config", str(wrong), "--timeout", "5", *extra)
        assert result.returncode == TEMPFAIL, (command, result.stderr)
        assert "refused the connection" in result.stderr
        assert "Not authorized" in result.stderr
        assert "Traceback" not in result.stderr
        assert "not-the-password" not in result.stderr


def test_the_daemon_with_a_wrong_password_exits_transient(site: RunningSite) -> None:
    raw = yaml.safe_load(with_password(site, "nope").read_text(encoding="utf-8"))
    raw["log_db"] = str(site.workdir / "second.sqlite")
    second = write_site_file(site.workdir, raw, name="second.yaml")
    result = flexedge("run", "--config", str(second))
    assert result.returncode == TEMPFAIL, result.stderr
    assert f"{site.host}:{site.port} refused the connection" in result.stderr
    assert "Traceback" not in result.stderr
