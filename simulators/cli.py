"""`flexedge sim --config FILE`: serve every modbus-tcp device of a site file until stopped.

Entry points for the CLI wiring:

    def main_sim(site_path: Path, *, host: str | None = None, port: int | None = None) -> None
        Blocking; returns after SIGINT or SIGTERM. Raises controller.errors.ConfigError for
        a bad site file or register map, OSError when a port cannot be bound.

    async def run_sim(site_path: Path, *, host: str | None = None, port: int | None = None,
                      stop: asyncio.Event | None = None,
                      on_started: Callable[[SiteSimulator], None] | None = None) -> None
        The same inside a running loop. Without `stop` it waits for SIGINT/SIGTERM; with
        `stop` it returns once the event is set (tests, embedding).

`host` and `port` override every device's address from the file; port 0 puts each device on
a free port (logged). One log line per device says where it is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from config.loader import load_site
from simulators.modbus_server import SiteSimulator, serve_site

logger = logging.getLogger(__name__)


async def run_sim(site_path: Path, *, host: str | None = None, port: int | None = None,
                  stop: asyncio.Event | None = None,
                  on_started: Callable[[SiteSimulator], None] | None = None) -> None:
    """Serve the site's simulated devices until `stop` is set or SIGINT/SIGTERM arrives."""
    site = load_site(site_path)
    simulator = await serve_site(site, host=host, port=port)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows event loops; Ctrl-C then ends asyncio.run instead.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
                handled.append(signum)
    try:
        for name in simulator.models:
            device_host, device_port = simulator.address(name)
            logger.info("simulating %s on %s:%s", name, device_host, device_port)
        if on_started is not None:
            on_started(simulator)
        await stop.wait()
        logger.info("stopping simulator")
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
        await simulator.stop()


def main_sim(site_path: Path, *, host: str | None = None, port: int | None = None) -> None:
    """Blocking entry for `flexedge sim --config FILE`."""
    asyncio.run(run_sim(site_path, host=host, port=port))
