"""Run a whole site for integration tests: `flexedge sim` and `flexedge run` as processes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flexedge.config.loader import EXAMPLE_SITE
from flexedge.tools.harness.broker import PrivateBroker, free_port
from flexedge.tools.harness.processes import spawn_flexedge, stop_process
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import wait_for, write_site_file


@dataclass
class RunningSite:
    site_file: Path
    db: Path
    prefix: str
    site: str
    host: str
    port: int
    workdir: Path
    device_count: int = 1
    has_tariffs: bool = True
    daemon: subprocess.Popen[bytes] | None = None
    # The daemon's output reaches daemon.log through a pipe (see spawn_flexedge).
    piped_log: bool = False

    def start_daemon(self) -> None:
        """(Re)start `flexedge run`; its log is appended to daemon.log."""
        self.daemon = spawn_flexedge(
            ["run", "--config", str(self.site_file)],
            self.workdir / "daemon.log",
            through_pipe=self.piped_log,
        )

    def kill_daemon(self) -> None:
        """kill -9: no shutdown code runs, nothing is flushed."""
        assert self.daemon is not None
        self.daemon.kill()
        self.daemon.wait()

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Read the daemon's SQLite log while it runs (WAL lets readers in)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


def write_site(workdir: Path, broker: PrivateBroker, **changes: Any) -> Path:
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw["mqtt"]["port"] = broker.port
    raw["log_db"] = str(workdir / "site.sqlite")
    # A site id of its own: the tests share one broker, and retained messages (status,
    # standing orders) of one test's site must not reach another's.
    raw["site"] = f"t{uuid.uuid4().hex[:10]}"
    raw.update(changes)
    for device in raw["devices"]:
        if device.get("transport", "modbus-tcp") == "modbus-tcp":
            device["port"] = free_port()
    return write_site_file(workdir, raw)


def _wait_online(site: RunningSite, daemon: subprocess.Popen[bytes]) -> None:
    """Until the daemon has published its standing orders (the last step of its start)."""

    def online() -> bool:
        if daemon.poll() is not None:
            log = (site.workdir / "daemon.log").read_text(errors="replace")
            raise RuntimeError(f"the daemon exited with {daemon.returncode}:\n{log}")
        if site.db.exists():
            # Online, and every device read at least once (the simulator starts alongside).
            with contextlib.suppress(sqlite3.OperationalError):
                ready = site.query(
                    "SELECT (SELECT COUNT(*) FROM orders), "
                    "(SELECT COUNT(DISTINCT asset) FROM telemetry)"
                )[0]
                return bool(ready[0] or not site.has_tariffs) and ready[1] >= site.device_count
        return False

    wait_for(online, 30, "the daemon to come online", interval=0.2)


@contextmanager
def running_site(
    workdir: Path,
    broker: PrivateBroker,
    *,
    fault_control: bool = False,
    piped_log: bool = False,
    **changes: Any,
) -> Iterator[RunningSite]:
    """With `fault_control`, the simulator takes `flexedge fault` messages from `broker`;
    with `piped_log`, the daemon logs through a pipe (RunningSite.piped_log)."""
    site_file = write_site(workdir, broker, **changes)
    raw = yaml.safe_load(site_file.read_text(encoding="utf-8"))
    sim_args = ["sim", "--config", str(site_file)]
    if fault_control:
        sim_args += ["--mqtt", f"{broker.host}:{broker.port}"]
    sim = spawn_flexedge(sim_args, workdir / "sim.log")
    running = RunningSite(
        site_file,
        Path(raw["log_db"]),
        raw["mqtt"]["prefix"],
        raw["site"],
        broker.host,
        broker.port,
        workdir,
        len(raw["devices"]),
        bool(raw.get("tariffs")),
        piped_log=piped_log,
    )
    running.start_daemon()
    try:
        assert running.daemon is not None
        _wait_online(running, running.daemon)
        yield running
    finally:
        if running.daemon is not None:
            stop_process(running.daemon)
        stop_process(sim)
        for name in ("daemon.log", "sim.log"):
            text = (workdir / name).read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {name} ---\n{text}")


async def open_market(
    site: RunningSite, *, username: str | None = None, password: str | None = None
) -> MarketClient:
    """A market client on the site's broker, started once the site says it is online."""
    market = MarketClient(
        site.host, site.port, site.prefix, site.site, username=username, password=password
    )
    await market.start()
    await market.wait_for(lambda m: m.get("type") == "status" and m["state"] == "online", 20)
    return market


async def slot_with(slot_s: float, seconds_left: float, after_start_s: float = 0.3) -> float:
    """The start of the current slot if it has `seconds_left` to go, else (after sleeping
    until `after_start_s` into it) of the next one."""
    now = time.time()
    start = now - now % slot_s
    if start + slot_s - now < seconds_left:
        start += slot_s
        await asyncio.sleep(start + after_start_s - now)
    return start
