"""The benchmark: a site of N batteries, both pollers over it, and the table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from flexedge.config.loader import Site, load_site
from flexedge.drivers.modbus_tcp import plan_reads
from flexedge.tools.bench_poll.pollers import poll_bare, poll_flexedge
from flexedge.tools.bench_poll.schedule import PERIOD_S, PollStats
from flexedge.tools.bench_poll.simulator_process import SimulatorProcess, raise_fd_limit

DEFAULT_DEVICES = (10, 100, 500)
DEFAULT_SECONDS = 20.0


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


@contextlib.contextmanager
def _quiet_devices() -> Iterator[None]:
    """One "connected to" info line per device buries the table at N=500; warnings stay."""
    logger = logging.getLogger("flexedge.drivers")
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
