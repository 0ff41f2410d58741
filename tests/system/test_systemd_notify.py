"""`flexedge run` under a Type=notify unit: the systemd notify protocol against a real
NOTIFY_SOCKET datagram socket that the test opens, as systemd would."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.processes import spawn_flexedge, stop_process
from tests.support.site_process import running_site, write_site


def _datagrams(sock: socket.socket, until: float) -> list[dict[str, str]]:
    """Every datagram that arrives before `until` (monotonic), parsed as KEY=value lines."""
    out: list[dict[str, str]] = []
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        out.append(dict(line.split("=", 1) for line in data.splitlines()))
    return out


def _first(sock: socket.socket, key: str, timeout_s: float) -> list[dict[str, str]]:
    """Datagrams up to and including the first one carrying `key`."""
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        seen.append(dict(line.split("=", 1) for line in data.splitlines()))
        if key in seen[-1]:
            return seen
    raise AssertionError(f"no {key} within {timeout_s} s; got {seen}")


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in NOTIFY_SOCKET, as systemd opens for a Type=notify unit."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = tmp_path / "notify.sock"
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


@pytest.mark.timeout(90)
def test_ready_status_watchdog_and_stopping(
    broker: PrivateBroker, tmp_path: Path, notify_socket: socket.socket
) -> None:
    sock = notify_socket
    with running_site(tmp_path, broker) as site:
        before_ready = _first(sock, "READY", 30)
        # Nothing but a ready message first: no watchdog ping before the first tick ran.
        assert [d for d in before_ready if "WATCHDOG" in d] == []
        ready = before_ready[-1]
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("online: ")
        assert "devices available" in ready["STATUS"]
        # The control tick (control_period_s 1 s in the example site) pings every second.
        pings = [d for d in _datagrams(sock, time.monotonic() + 3.5) if "WATCHDOG" in d]
        assert len(pings) >= 2, pings
        assert site.daemon is not None
        stop_process(site.daemon)
        assert site.daemon.returncode == 0
        after = _datagrams(sock, time.monotonic() + 1.0)
        assert {"STOPPING": "1"} in after, after
        site.daemon = None


@pytest.mark.timeout(90)
def test_a_dead_device_does_not_hold_back_ready_and_status_names_it(
    broker: PrivateBroker, tmp_path: Path, notify_socket: socket.socket
) -> None:
    sock = notify_socket
    # No simulator: every device of the site is dead from the start.
    site_file = write_site(tmp_path, broker)
    names = [d["name"] for d in yaml.safe_load(site_file.read_text())["devices"]]
    daemon = spawn_flexedge(["run", "--config", str(site_file)], tmp_path / "daemon.log")
    try:
        ready = _first(sock, "READY", 45)[-1]
        assert ready["STATUS"].startswith(f"online: 0/{len(names)} devices available")
        for name in names:
            assert name in ready["STATUS"]
    finally:
        stop_process(daemon)
