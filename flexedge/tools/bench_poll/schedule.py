"""The 1 Hz schedule both pollers run on, and what a run measures (PollStats)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from flexedge.tools.bench_poll.simulator_process import SimulatorProcess

PERIOD_S = 1.0

# Ticks: (scheduled, all readings in, tick done) on the loop clock, and readings that arrived.
TickFn = Callable[[], Awaitable[tuple[float, int]]]


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


def poll_stats(kind: str, n: int, window: _Window) -> PollStats:
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
