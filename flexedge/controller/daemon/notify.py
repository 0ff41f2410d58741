"""The systemd notify protocol (sd_notify), spoken over the unix datagram socket systemd names in
NOTIFY_SOCKET. A path, or an abstract address written with a leading '@'. Without NOTIFY_SOCKET
(run from a shell, not under a Type=notify unit) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

log = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    """The socket address for NOTIFY_SOCKET's value: '@name' is the abstract address '\\0name'."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends `KEY=value` lines to systemd; a failed send is logged once and never raised."""

    def __init__(self, notify_socket: str | None = None) -> None:
        raw = os.environ.get("NOTIFY_SOCKET") if notify_socket is None else notify_socket
        self._address = _address(raw) if raw else None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, **fields: str) -> bool:
        """Send one datagram of `KEY=value` lines; True when it went out."""
        if self._address is None or not fields:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("systemd notify socket %s: %s", self._address, exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=_one_line(status))

    def status(self, status: str) -> bool:
        return self.send(STATUS=_one_line(status))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self) -> bool:
        return self.send(STOPPING="1")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def site_summary(state: str, assets: dict[str, dict[str, Any]], open_commitments: int) -> str:
    """The one-line STATUS systemd shows: the daemon's state, how many devices answer (and
    which do not, so a site started with a dead device says so), and the open commitments."""
    down = sorted(name for name, asset in assets.items() if not asset.get("available"))
    devices = f"{len(assets) - len(down)}/{len(assets)} devices available"
    if down:
        devices += f" (unavailable: {', '.join(down)})"
    plural = "" if open_commitments == 1 else "s"
    return f"{state}: {devices}, {open_commitments} open commitment{plural}"
