"""WATCHDOG=1 comes from the control tick itself: while a tick is stuck, the pings stop (and
systemd, after WatchdogSec, restarts the service); once it completes they come again.

The daemon runs in this process on the private broker, with a fake battery, against a real
NOTIFY_SOCKET datagram socket. The tick is made stuck the way a hung device write or dispatch
would hold it: the test holds the control loop's lock, which every tick takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from pathlib import Path

import pytest
import yaml

from flexedge.config.loader import load_site
from flexedge.controller.daemon.daemon import Daemon
from flexedge.controller.daemon.notify import Notifier
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import fake_site


async def _datagrams(sock: socket.socket, seconds: float) -> list[dict[str, str]]:
    """Every datagram within `seconds`, as KEY=value pairs."""
    loop = asyncio.get_running_loop()
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), left)
        except TimeoutError:
            break
        out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
    return out


async def _until(sock: socket.socket, key: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(seconds):
        while key not in (await loop.sock_recv(sock, 4096)).decode():
            pass


@pytest.mark.timeout(60)
def test_a_stuck_tick_stops_the_watchdog_pings_until_it_completes(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["site"] = f"wd{uuid.uuid4().hex[:8]}"
    raw["mqtt"] = {"host": broker.host, "port": broker.port}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    battery = FakeDevice("b1", time.time, soc=0.5)

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify.sock"))
        sock.setblocking(False)

        async def scenario() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
            daemon = Daemon(load_site(path), devices={"b1": battery})
            daemon.notifier = Notifier(str(tmp_path / "notify.sock"))
            running = asyncio.get_running_loop().create_task(daemon.run())
            try:
                await _until(sock, "READY=1", 20)
                await _until(sock, "WATCHDOG=1", 5)  # ticks ping
                async with daemon.control.lock:  # the tick is stuck from now on
                    # Time passing is the behaviour here: three control periods of silence.
                    stuck = await _datagrams(sock, 3.0)
                after = await _datagrams(sock, 3.0)
                return stuck, after
            finally:
                daemon.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(running, 15)

        stuck, after = run(scenario())
    assert [d for d in stuck if "WATCHDOG" in d] == []
    assert len([d for d in after if d.get("WATCHDOG") == "1"]) >= 2  # pings again each tick
