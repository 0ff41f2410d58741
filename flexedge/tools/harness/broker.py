"""A private Mosquitto for tests, the demo and the benchmark.

Nothing in production uses this: the site's broker is configured, not started by us. The
private broker listens on 127.0.0.1 only, allows anonymous clients and keeps nothing on disk;
given `users`, it takes only those logins instead (a site whose broker needs a password), given
`tls` it speaks only TLS (certificates from certificates.py), and given `acl_file` it lets
each user publish and subscribe only where that file says.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from flexedge.errors import BrokerUnavailable

log = logging.getLogger(__name__)

_FALLBACK_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_INSTALL_HINT = "install it with `sudo apt-get install mosquitto` (or your platform's package)"

# Mosquitto's defaults (20 in flight, 1000 queued per client) silently drop QoS 1 messages
# when a burst meets a slow subscriber; the tests and the benchmark must never lose one.
_MAX_QUEUED = 100_000
_MAX_INFLIGHT = 1_000


@dataclass(frozen=True)
class ServerTls:
    """The broker's side of TLS: its certificate and key, and for client certificates the
    CA that signs them."""

    cert_file: Path
    key_file: Path
    # Mosquitto wants a CA for its TLS listener even when it asks for no client certificate.
    ca_file: Path
    # Refuse a client without a certificate signed by ca_file.
    require_certificate: bool = False


def find_mosquitto() -> str:
    """Path of the mosquitto binary: PATH first, then the Debian location (/usr/sbin is
    often not on a normal user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _FALLBACK_PATHS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BrokerUnavailable(f"mosquitto not found on PATH or in /usr/sbin; {_INSTALL_HINT}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class PrivateBroker:
    """One mosquitto process on 127.0.0.1. stop() then start() (or restart()) keeps the port,
    which is how tests simulate a broker outage."""

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        start_timeout: float = 10.0,
        users: Mapping[str, str] | None = None,
        tls: ServerTls | None = None,
        acl_file: Path | None = None,
    ) -> None:
        """`users` {username: password}: refuse anonymous clients and every other login.
        `tls`: the listener speaks TLS only. `acl_file`: Mosquitto's access control list."""
        self.users = dict(users) if users else {}
        self.tls = tls
        self.acl_file = acl_file
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="flexedge-mosquitto-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            *self._tls_lines(),
            *((f"acl_file {self.acl_file}",) if self.acl_file is not None else ()),
            *(
                ("allow_anonymous false", f"password_file {self._write_password_file()}")
                if self.users
                else ("allow_anonymous true",)
            ),
            "persistence false",
            f"max_queued_messages {_MAX_QUEUED}",
            f"max_inflight_messages {_MAX_INFLIGHT}",
            # Logs go to stderr, which start() redirects into log_path: that file then also
            # holds the errors mosquitto prints before it has read the config.
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # As root mosquitto would switch to the `mosquitto` user, which may not exist or
            # may not read our temp dir; as anyone else this line has no effect.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _tls_lines(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        return [
            f"cafile {tls.ca_file}",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]

    def _write_password_file(self) -> Path:
        """Mosquitto's password file for `users`, hashed by its own mosquitto_passwd."""
        path = self.workdir / "passwords"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()), encoding="utf-8")
        path.chmod(0o600)
        binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        try:
            subprocess.run([binary, "-U", str(path)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise BrokerUnavailable(f"cannot hash the password file with {binary}: {exc}") from exc
        return path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start mosquitto and return once the port accepts TCP connections."""
        if self.running:
            return
        binary = find_mosquitto()
        # Another broker on the same port would answer our readiness probe: refuse early.
        if _port_accepts(self.host, self.port):
            raise BrokerUnavailable(f"port {self.host}:{self.port} is already in use")
        self._write_config()
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup_process()
                raise BrokerUnavailable(
                    f"mosquitto exited with status {code} on start:\n{self.log_tail()}"
                )
            if _port_accepts(self.host, self.port):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerUnavailable(
                    f"mosquitto did not listen on {self.host}:{self.port} within "
                    f"{self.start_timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        log.info("private mosquitto pid %s on %s:%s", self._proc.pid, self.host, self.port)

    def stop(self, grace: float = 5.0) -> None:
        """Terminate mosquitto (SIGTERM, then SIGKILL after `grace` seconds). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto pid %s ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._cleanup_process()

    def _cleanup_process(self) -> None:
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> None:
        """Stop and start again on the same port (a broker outage for tests)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the temporary working directory, if we made it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
