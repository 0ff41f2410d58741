"""A site whose broker speaks only TLS and takes only a login: the daemon, the simulator's
fault control and the operator's commands all connect with the site file's `mqtt.tls` and
its `password_file` (both relative to the site file), and a wrong CA is refused, clearly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flexedge.cli.exit_codes import CONFIG, TEMPFAIL
from flexedge.tools.harness.broker import PrivateBroker, ServerTls
from flexedge.tools.harness.certificates import Pki, make_ca, make_pki
from tests.support.harness import write_site_file
from tests.support.site_process import RunningSite, running_site

USER, PASSWORD = "site", "tls-Pa55-w0rd"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[PrivateBroker]:
    tls = ServerTls(pki.server.cert_file, pki.server.key_file, pki.ca_file)
    with PrivateBroker(users={USER: PASSWORD}, tls=tls) as private:
        yield private


@pytest.fixture(scope="module")
def site(
    tls_broker: PrivateBroker, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("tls")
    # Next to the site file, named relative to it, as a gateway's /etc/flexedge would hold them.
    (workdir / "secrets").mkdir()
    (workdir / "secrets" / "mqtt-password").write_text(PASSWORD + "\n", encoding="utf-8")
    (workdir / "secrets" / "mqtt-password").chmod(0o600)
    (workdir / "secrets" / "broker-ca.pem").write_bytes(pki.ca_file.read_bytes())
    mqtt = {
        "host": tls_broker.host,
        "port": tls_broker.port,
        "prefix": "flexedge",
        "username": USER,
        "password_file": "secrets/mqtt-password",
        "tls": {"ca_file": "secrets/broker-ca.pem"},
    }
    with running_site(workdir, tls_broker, fault_control=True, mqtt=mqtt) as running:
        yield running


def flexedge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def with_tls(site: RunningSite, name: str, **tls: object) -> Path:
    raw = yaml.safe_load(site.site_file.read_text(encoding="utf-8"))
    raw["mqtt"]["tls"] = tls
    return write_site_file(site.workdir, raw, name=name)


def test_the_daemon_runs_over_tls_with_a_password_file(site: RunningSite) -> None:
    log = (site.workdir / "daemon.log").read_text(errors="replace")
    assert f"connected to {site.host}:{site.port} over TLS" in log
    assert PASSWORD not in log


def test_status_order_and_fault_over_tls(site: RunningSite, tmp_path: Path) -> None:
    # From another folder: the site file's relative paths are not the working directory's.
    status = flexedge("status", "--config", str(site.site_file), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert site.site in status.stdout

    order = flexedge(
        "order", "--config", str(site.site_file), "--tariff", "tariff-1", "--ratio", "0.7"
    )
    assert order.returncode == 0, order.stderr
    assert "up order of tariff-1: exercise_ratio 0.7" in order.stdout

    fault = flexedge(
        "fault", "--config", str(site.site_file), "--device", "battery-1", "--latency", "0"
    )
    assert fault.returncode == 0, fault.stderr
    assert fault.stdout.startswith("battery-1:")


def test_a_wrong_ca_is_refused_at_once_with_a_clear_error(site: RunningSite) -> None:
    other = make_ca(site.workdir / "other", "not the broker's CA")
    wrong = with_tls(site, "wrong-ca.yaml", ca_file=str(other.cert_file))
    began = time.monotonic()
    result = flexedge("status", "--config", str(wrong), "--timeout", "20")
    assert time.monotonic() - began < 15, "waited for the timeout instead of refusing"
    assert result.returncode == TEMPFAIL, result.stderr
    assert f"cannot connect to {site.host}:{site.port}" in result.stderr
    assert "certificate was not accepted" in result.stderr
    assert "mqtt.tls.ca_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_daemon_with_a_wrong_ca_exits_transient(site: RunningSite) -> None:
    other = make_ca(site.workdir / "other-daemon", "another CA")
    raw = yaml.safe_load(
        with_tls(site, "daemon-wrong-ca.yaml", ca_file=str(other.cert_file)).read_text()
    )
    raw["log_db"] = str(site.workdir / "second.sqlite")
    second = write_site_file(site.workdir, raw, name="second.yaml")
    result = flexedge("run", "--config", str(second))
    assert result.returncode == TEMPFAIL, result.stderr
    assert "certificate was not accepted" in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr


def test_a_missing_ca_file_is_a_configuration_error(site: RunningSite) -> None:
    wrong = with_tls(site, "no-ca.yaml", ca_file="secrets/nope.pem")
    result = flexedge("status", "--config", str(wrong))
    assert result.returncode == CONFIG, result.stderr
    assert f"mqtt.tls.ca_file: cannot read {site.workdir}/secrets/nope.pem" in result.stderr
