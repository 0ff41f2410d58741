"""Two pseudo-terminals joined like a null-modem cable, for serial tests without socat.

    with NullModem() as line:
        simulator opens line.a, driver opens line.b

Bytes written to one end are read at the other. A pty pair alone will not do: its master is
no tty path that pyserial can open, so two pairs are made and a thread copies between their
masters. This process keeps both slave ends open so that a user closing and reopening a path
(a reconnect) does not hang up the line.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import tty
from types import TracebackType


class NullModem:
    """Two tty paths, `a` and `b`, connected to each other while the relay runs."""

    def __init__(self) -> None:
        self._a_master, self._a_slave = os.openpty()
        self._b_master, self._b_slave = os.openpty()
        for slave in (self._a_slave, self._b_slave):
            tty.setraw(slave)  # no echo, no line editing, before anyone opens the path
        for master in (self._a_master, self._b_master):
            # Bytes for an end nobody reads are dropped, as on a real line, rather than
            # blocking the relay once the pty buffer is full.
            os.set_blocking(master, False)
        self.a = os.ttyname(self._a_slave)
        self.b = os.ttyname(self._b_slave)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._relay, name="pty-relay", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        peer = {self._a_master: self._b_master, self._b_master: self._a_master}
        while True:
            ready, _, _ = select.select([*peer, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # woken without data after all
                    continue
                with contextlib.suppress(BlockingIOError):
                    os.write(peer[fd], data)

    def close(self) -> None:
        """Stop the relay and close every fd; safe to call twice."""
        if self._wake_w < 0:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=2)
        for fd in (
            self._a_master,
            self._a_slave,
            self._b_master,
            self._b_slave,
            self._wake_r,
            self._wake_w,
        ):
            os.close(fd)
        self._wake_w = -1

    def __enter__(self) -> NullModem:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
