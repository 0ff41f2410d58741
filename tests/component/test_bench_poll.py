"""`flexedge bench poll` end to end at a small size: simulators in their own process, the real
ControlLoop and the bare pymodbus floor over real sockets. Only the shape of the result is
checked; timing depends on the machine, so no thresholds on it."""

from __future__ import annotations

import math
from pathlib import Path

from flexedge.tools.bench_poll import PollStats, bench_poll

N = 5
SECONDS = 3.0


def test_bench_poll_small(tmp_path: Path) -> None:
    results = bench_poll(N, SECONDS, tmp_path)
    assert [r.kind for r in results] == ["flexedge", "bare pymodbus"]
    for stats in results:
        check(stats)
    # flexedge really logged its ticks to SQLite.
    assert (tmp_path / f"poll-{N}.sqlite").exists()


def check(stats: PollStats) -> None:
    assert stats.devices == N
    assert stats.scheduled == round(SECONDS)
    assert len(stats.readings) == stats.scheduled
    assert 1 <= stats.ran <= stats.scheduled
    assert len(stats.done_ms) == stats.ran
    assert all(0 <= r <= N for r in stats.readings)
    assert stats.read_share >= 0.9, f"{stats.kind}: {stats.readings}"
    for cpu in (stats.cpu_pct, stats.sim_cpu_pct):
        assert math.isfinite(cpu) and 0 <= cpu <= 100
    assert all(j >= 0 for j in stats.jitter_ms)
    assert all(d >= j for d, j in zip(stats.done_ms, stats.jitter_ms, strict=True))
    assert stats.jitter_p(0.5) <= stats.jitter_p(0.99)
