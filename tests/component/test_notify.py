"""The sd_notify sender against a real unix datagram socket, by path and by abstract address."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

from flexedge.controller.daemon.notify import Notifier


def _receive(sock: socket.socket) -> dict[str, str]:
    sock.settimeout(5)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_path_socket_gets_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier(path)
        assert notifier.ready("3 devices,\n1 unavailable")
        assert _receive(sock) == {"READY": "1", "STATUS": "3 devices, 1 unavailable"}
        assert notifier.watchdog()
        assert _receive(sock) == {"WATCHDOG": "1"}
        assert notifier.stopping()
        assert _receive(sock) == {"STOPPING": "1"}


def test_abstract_address() -> None:
    name = f"flexedge-test-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        assert Notifier(f"@{name}").status("running")
        assert _receive(sock) == {"STATUS": "running"}


def test_no_socket_sends_nothing_and_a_dead_socket_does_not_raise(tmp_path: Path) -> None:
    assert not Notifier("").enabled
    assert not Notifier("").watchdog()
    assert not Notifier(str(tmp_path / "absent.sock")).watchdog()
