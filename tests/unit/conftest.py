"""The unit tier opens no socket and starts no process: a test that tries fails at once."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

_NETWORK_FAMILIES = {socket.AF_INET, socket.AF_INET6}


def _refuse(what: str) -> NoReturn:
    raise AssertionError(f"a unit test may not {what}: move it to tests/component or tests/system")


@pytest.fixture(scope="session", autouse=True)
def _font_cache() -> None:
    # matplotlib runs fc-list once per machine to build its font cache, on its first import;
    # done here, before the guard below, a plot in a unit test does not count as a process.
    import matplotlib.font_manager  # noqa: F401


@pytest.fixture(autouse=True)
def _no_sockets_or_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original_connect = socket.socket.connect
    original_bind = socket.socket.bind

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in _NETWORK_FAMILIES:
            _refuse(f"connect to {address!r}")
        original_connect(self, address)

    def bind(self: socket.socket, address: Any) -> None:
        if self.family in _NETWORK_FAMILIES:
            _refuse(f"bind {address!r}")
        original_bind(self, address)

    def popen(*args: Any, **kwargs: Any) -> NoReturn:
        _refuse(f"start a process {args[:1]!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    monkeypatch.setattr(socket.socket, "bind", bind)
    monkeypatch.setattr(subprocess, "Popen", popen)
    yield
