"""`flexedge bench poll`: how many devices one gateway polls at 1 Hz.

For each N, N simulated batteries are served by a separate process (so their CPU is not
counted as the controller's; it is measured and shown on its own) and polled twice in the
same run, one after the other:

* flexedge: the real ControlLoop with a 1-s tick and no commitments. Every tick polls every
  device, meters, dispatches (writes each device's setpoint and the heartbeat, reads it back)
  and logs telemetry and setpoints to SQLite, like `flexedge run` does.
* bare pymodbus: the raw floor. One AsyncModbusTcpClient per device reads the same register
  blocks as the driver's read plan, all devices concurrently, no decoding, no logging.

Per tick: jitter = from the tick's scheduled time until all of its readings were in, and how
many devices were read. Per run: CPU time of this process over wall time (% of one core; the
controller is one asyncio thread, so 100 % is its ceiling even on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient

from flexedge.config.loader import Site, load_site
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Reading
from flexedge.drivers.modbus_tcp import ModbusTcpDevice, ReadBlock, plan_reads
from flexedge.errors import DeviceError
from flexedge.mqtt import MqttLink
from flexedge.simulators.devices.modbus_server import serve_site

log = logging.getLogger(__name__)

PERIOD_S = 1.0
DEFAULT_DEVICES = (10, 100, 500)
DEFAULT_SECONDS = 20.0
# Starting 500 pymodbus servers takes a while on a small machine; more means it is stuck.
SIM_START_TIMEOUT_S = 300.0
CHECKPOINT_EVERY_S = 10.0  # as the daemon's checkpoint job

# Ticks: (scheduled, all readings in, tick done) on the loop clock, and readings that arrived.
TickFn = Callable[[], Awaitable[tuple[float, int]]]


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: 500 devices are 500 sockets on each side (and
    as many listeners on the simulator's), past the common default soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class PollStats:
    """One polling run over `devices` devices."""

    kind: str
    devices: int
    scheduled: int  # ticks due in the window
    cpu_pct: float  # this process: CPU time / wall time, % of one core
    sim_cpu_pct: float  # the simulator process, same measure over its own clock
    jitter_ms: tuple[float, ...]  # per tick that ran: scheduled -> all readings in
    done_ms: tuple[float, ...]  # per tick that ran: scheduled -> tick finished
    readings: tuple[int, ...]  # per scheduled tick; a skipped tick read nothing

    @property
    def ran(self) -> int:
        return len(self.jitter_ms)

    @property
    def readings_per_tick(self) -> float:
        return statistics.fmean(self.readings) if self.readings else 0.0

    @property
    def read_share(self) -> float:
        """Mean share of the devices read per scheduled tick (1.0: every device, every tick)."""
        return self.readings_per_tick / self.devices

    def jitter_p(self, q: float) -> float:
        return _pct(self.jitter_ms, q)

    def done_p(self, q: float) -> float:
        return _pct(self.done_ms, q)


# -- the simulators, in their own process ------------------------------------------------------


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


# -- the site ------------------------------------------------------------------------------


def write_site(path: Path, n: int, log_db: Path) -> Path:
    """N generic batteries. Ports are placeholders: the simulators bind free ones (port 0)
    and both pollers are pointed at what they bound."""
    raw: dict[str, Any] = {
        "site": f"bench-poll-{n}",
        "control_period_s": PERIOD_S,
        "log_db": str(log_db),
        "devices": [
            {
                "name": f"battery-{i:03d}",
                "kind": "battery",
                "transport": "modbus-tcp",
                "host": "127.0.0.1",
                "port": 502,
                "unit_id": 1,
                "register_map": "battery_generic",
                "capacity_kwh": 10,
                "max_charge_kw": 5,
                "max_discharge_kw": 5,
                "setpoint_timeout_s": 60,
                "simulator": {"initial_soc": 0.6},
            }
            for i in range(1, n + 1)
        ],
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


# -- the 1 Hz schedule ---------------------------------------------------------------------


@dataclass
class _Window:
    scheduled: int
    cpu_pct: float
    sim_cpu_pct: float
    jitter_ms: list[float]
    done_ms: list[float]
    readings: list[int]


async def at_rate(
    tick: TickFn, seconds: float, sim: SimulatorProcess, period: float = PERIOD_S
) -> _Window:
    """Run `tick` on a fixed grid of `period` for `seconds`. Like the daemon's scheduler
    (max_instances=1, coalesce), a grid point that falls while a tick is still running is
    skipped, not queued: it counts as a tick that read nothing."""
    loop = asyncio.get_running_loop()
    count = max(1, round(seconds / period))
    start = loop.time() + period / 10  # a little lead so the first tick is on time
    jitter: list[float] = []
    done_ms: list[float] = []
    readings = [0] * count
    sim_cpu0, sim_wall0 = sim.cpu()
    await asyncio.sleep(max(0.0, start - loop.time()))
    cpu0, wall0 = time.process_time(), loop.time()
    k = 0
    while k < count:
        scheduled = start + k * period
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        readings_in, readings[k] = await tick()
        done = loop.time()
        jitter.append((readings_in - scheduled) * 1000)
        done_ms.append((done - scheduled) * 1000)
        k += 1
        while k < count and start + k * period < done:
            k += 1
    # The window is whole periods (or up to the end of an overrunning last tick), so idle
    # time between ticks counts: the CPU share is what polling at 1 Hz costs.
    await asyncio.sleep(max(0.0, start + count * period - loop.time()))
    cpu1, wall1 = time.process_time(), loop.time()
    sim_cpu1, sim_wall1 = sim.cpu()
    return _Window(
        count,
        100 * (cpu1 - cpu0) / (wall1 - wall0),
        100 * (sim_cpu1 - sim_cpu0) / (sim_wall1 - sim_wall0),
        jitter,
        done_ms,
        readings,
    )


def _stats(kind: str, n: int, window: _Window) -> PollStats:
    return PollStats(
        kind,
        n,
        window.scheduled,
        window.cpu_pct,
        window.sim_cpu_pct,
        tuple(window.jitter_ms),
        tuple(window.done_ms),
        tuple(window.readings),
    )


# -- flexedge ------------------------------------------------------------------------------


class _TimedControlLoop(ControlLoop):
    """The real ControlLoop; poll() also notes when the tick's readings were all in and how
    many arrived (tick() goes on to dispatch, write and log after that)."""

    polled_at = 0.0
    polled = 0

    async def poll(self, names: Iterable[str]) -> list[Reading]:
        readings = await super().poll(names)
        self.polled_at = asyncio.get_running_loop().time()
        self.polled = len(readings)
        return readings


async def _connect(site: Site, devices: dict[str, ModbusTcpDevice]) -> None:
    """As the daemon's start: connect and set each device's lease (here all at once: one by
    one, 500 devices take a while and that is not what is measured)."""

    async def one(device: ModbusTcpDevice, lease_s: int) -> None:
        try:
            await device.connect()
            await device.configure_lease(lease_s)
        except DeviceError as exc:
            log.warning("%s; the controller will keep trying", exc)

    await asyncio.gather(*(one(devices[c.name], c.setpoint_timeout_s) for c in site.config.devices))


async def _checkpoints(store: Store) -> None:
    # The daemon folds the WAL back every 10 s from a worker thread (wal_autocheckpoint=0);
    # without it the WAL only grows and the log's cost is understated.
    while True:
        await asyncio.sleep(CHECKPOINT_EVERY_S)
        await asyncio.to_thread(store.checkpoint)


async def poll_flexedge(
    site: Site, ports: dict[str, int], seconds: float, sim: SimulatorProcess
) -> PollStats:
    devices = {
        c.name: ModbusTcpDevice.from_config(c, site.maps[c.name], port=ports[c.name])
        for c in site.config.devices
    }
    store = Store(site.log_db_path)
    link = MqttLink(host="127.0.0.1", port=1, client_id="bench-poll")  # never connected
    outbox = Outbox(store, link, f"flexedge/{site.config.site}", time.time)
    control = _TimedControlLoop(site, dict(devices), store, outbox, time.time)
    checkpoints: asyncio.Task[None] | None = None
    try:
        await _connect(site, devices)
        await control.tick()  # the daemon's first tick, before its scheduler starts

        async def tick() -> tuple[float, int]:
            await control.tick()
            return control.polled_at, control.polled

        checkpoints = asyncio.get_running_loop().create_task(_checkpoints(store))
        window = await at_rate(tick, seconds, sim)
    finally:
        if checkpoints is not None:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
        # As the daemon stops: in-flight requests finish, every battery back to 0 kW.
        await control.safe_state()
        for device in devices.values():
            await device.close()
        store.close()
    return _stats("flexedge", len(devices), window)


# -- bare pymodbus -------------------------------------------------------------------------


async def _read_bare(client: AsyncModbusTcpClient, blocks: Sequence[ReadBlock], unit: int) -> bool:
    # The blocks of one device go one after the other, as the driver sends them.
    for block in blocks:
        read = (
            client.read_input_registers if block.table == "input" else client.read_holding_registers
        )
        response = await read(block.address, count=block.count, device_id=unit)
        if response.isError():
            return False
    return True


async def poll_bare(
    site: Site, ports: dict[str, int], seconds: float, sim: SimulatorProcess
) -> PollStats:
    configs = site.config.devices
    # Same client settings as the driver: one attempt, bounded by the device timeout, no
    # background reconnects.
    clients = [
        AsyncModbusTcpClient(
            "127.0.0.1", port=ports[c.name], timeout=c.timeout_s, retries=0, reconnect_delay=0
        )
        for c in configs
    ]
    plans = [plan_reads(site.maps[c.name].spec) for c in configs]
    try:
        await asyncio.gather(*(client.connect() for client in clients))

        async def tick() -> tuple[float, int]:
            results = await asyncio.gather(
                *(
                    _read_bare(client, blocks, c.unit_id)
                    for client, blocks, c in zip(clients, plans, configs, strict=True)
                ),
                return_exceptions=True,
            )
            return asyncio.get_running_loop().time(), sum(r is True for r in results)

        window = await at_rate(tick, seconds, sim)
    finally:
        for client in clients:
            client.close()
    return _stats("bare pymodbus", len(clients), window)


# -- the benchmark -------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_devices() -> Iterator[None]:
    """One "connected to" info line per device buries the table at N=500; warnings stay."""
    logger = logging.getLogger("drivers")
    level = logger.level
    logger.setLevel(max(logging.WARNING, level))
    try:
        yield
    finally:
        logger.setLevel(level)


def bench_poll(
    n: int, seconds: float = DEFAULT_SECONDS, workdir: Path | None = None
) -> tuple[PollStats, PollStats]:
    """Serve N batteries in a separate process; poll them with flexedge, then bare pymodbus."""
    raise_fd_limit()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="flexedge-bench-poll-"))
    site_path = write_site(workdir / f"site-{n}.yaml", n, workdir / f"poll-{n}.sqlite")
    site = load_site(site_path)
    with SimulatorProcess(site_path) as sim, _quiet_devices():

        async def both() -> tuple[PollStats, PollStats]:
            flexedge = await poll_flexedge(site, sim.ports, seconds, sim)
            bare = await poll_bare(site, sim.ports, seconds, sim)
            return flexedge, bare

        return asyncio.run(both())


def requests_per_tick(site: Site) -> tuple[int, int]:
    """Modbus requests per device per tick: (flexedge, bare). flexedge reads the plan, writes
    heartbeat and setpoint, then reads the plan back to confirm; bare reads the plan."""
    spec = site.maps[site.config.devices[0].name].spec
    reads = len(plan_reads(spec))
    writes = 1 + ("heartbeat" in spec.points)
    return 2 * reads + writes, reads


def _row(stats: PollStats, ratio: str) -> str:
    return (
        f"{stats.devices:>5} {stats.kind:<14} {stats.cpu_pct:>6.1f} {stats.sim_cpu_pct:>6.1f} "
        f"{stats.jitter_p(0.5):>8.1f} {stats.jitter_p(0.99):>8.1f} "
        f"{stats.done_p(0.5):>8.1f} {stats.done_p(0.99):>8.1f} "
        f"{stats.readings_per_tick:>9.1f} {100 * stats.read_share:>6.1f} "
        f"{stats.ran:>3}/{stats.scheduled:<3} {ratio:>6}"
    )


def run_poll_bench(
    devices: Sequence[int] = DEFAULT_DEVICES, seconds: float = DEFAULT_SECONDS
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flexedge-bench-poll-"))
    nofile = raise_fd_limit()
    flexedge_requests, bare_requests = requests_per_tick(
        load_site(write_site(workdir / "probe.yaml", 1, workdir / "probe.sqlite"))
    )
    print(
        f"poll: N = {', '.join(map(str, devices))} simulated batteries, 1 Hz for "
        f"{seconds:g} s each; simulators in a separate process; RLIMIT_NOFILE {nofile}; "
        f"work dir {workdir}",
        flush=True,
    )
    print(
        f"Modbus requests per device per tick: flexedge {flexedge_requests} (read, "
        f"heartbeat + setpoint writes, read-back), bare {bare_requests} (read)",
        flush=True,
    )
    header = (
        f"{'N':>5} {'kind':<14} {'CPU %':>6} {'sim %':>6} {'jit p50':>8} "
        f"{'jit p99':>8} {'done p50':>8} {'done p99':>8} {'read/tick':>9} "
        f"{'read %':>6} {'ticks':>7} {'CPU x':>6}"
    )
    print(header, flush=True)
    for n in devices:
        flexedge, bare = bench_poll(n, seconds, workdir)
        ratio = flexedge.cpu_pct / bare.cpu_pct if bare.cpu_pct > 0 else float("nan")
        print(_row(flexedge, f"{ratio:.2f}"), flush=True)
        print(_row(bare, "1.00"), flush=True)
    print(
        "CPU %: this process, CPU time / wall time, % of one core (2 cores here); sim %: the "
        "simulator process. jit: ms from a tick's scheduled time until all its readings were "
        "in; done: until the tick finished (flexedge: after writes, read-back and SQLite). "
        "read/tick: devices read per scheduled tick (a skipped tick reads 0). "
        "CPU x: flexedge CPU / bare CPU at the same N.",
        flush=True,
    )
    return 0
