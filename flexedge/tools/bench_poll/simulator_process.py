"""The simulated batteries in a process of their own, so their CPU is not counted as the
controller's; it answers with its own CPU time so that can be shown apart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType

from flexedge.config.loader import load_site
from flexedge.simulators.devices.modbus_server import serve_site

# Starting 500 pymodbus servers takes a while on a small machine; more means it is stuck.
SIM_START_TIMEOUT_S = 300.0


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: 500 devices are 500 sockets on each side (and
    as many listeners on the simulator's), past the common default soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _serve(site_path: str, conn: Connection) -> None:
    """Child process: serve every device of the site on its own free port, send the ports,
    then answer "cpu" with (process_time, monotonic) until "stop" or the pipe closes."""
    raise_fd_limit()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(_serve_async(Path(site_path), conn))


async def _serve_async(site_path: Path, conn: Connection) -> None:
    site = load_site(site_path)
    sim = await serve_site(site, port=0)
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue[object] = asyncio.Queue()

    def readable() -> None:
        try:
            messages.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent is gone: stop too
            loop.remove_reader(conn.fileno())
            messages.put_nowait("stop")

    try:
        conn.send({name: sim.address(name)[1] for name in sim.models})
        # A reader on the pipe, not a thread blocked in recv(): nothing in this process
        # but the simulators should run while the controller is measured.
        loop.add_reader(conn.fileno(), readable)
        while (message := await messages.get()) != "stop":
            if message == "cpu":
                conn.send((time.process_time(), time.monotonic()))
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        await sim.stop()


class SimulatorProcess:
    """The site's simulators in a spawned process; `ports` maps device name -> bound port."""

    def __init__(self, site_path: Path) -> None:
        self.site_path = site_path
        self.ports: dict[str, int] = {}
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def __enter__(self) -> SimulatorProcess:
        # spawn: a fresh interpreter, none of this process' threads, loop or sockets.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_serve, args=(str(self.site_path), child), name="flexedge-bench-sim", daemon=True
        )
        process.start()
        child.close()  # ours: so a dead child shows as EOF on `parent`
        self._conn, self._process = parent, process
        try:
            if not parent.poll(SIM_START_TIMEOUT_S):
                raise RuntimeError(f"simulators not up after {SIM_START_TIMEOUT_S:.0f} s")
            self.ports = parent.recv()
        except EOFError:
            process.join(5)
            code = process.exitcode
            self.__exit__(None, None, None)
            raise RuntimeError(
                f"simulator process exited (code {code}) before serving; its traceback is above"
            ) from None
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def cpu(self) -> tuple[float, float]:
        """(CPU seconds, monotonic seconds) of the simulator process, now."""
        assert self._conn is not None
        self._conn.send("cpu")
        if not self._conn.poll(10):
            raise RuntimeError("simulator process does not answer")
        cpu, wall = self._conn.recv()
        return float(cpu), float(wall)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send("stop")
        if self._process is not None:
            self._process.join(15)
            if self._process.is_alive():  # stuck: it has had its chance to stop cleanly
                self._process.terminate()
                self._process.join(5)
            self._process.close()
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
