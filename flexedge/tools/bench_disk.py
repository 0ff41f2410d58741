"""`flexedge bench disk`: how much flash the log takes per device and day, and what the
default retention (7 days raw, a year of minutes) levels off at.

It writes what the control loop writes each tick, one telemetry row per device in one
transaction per tick, through the daemon's own Store (its schema, indexes and pragmas), for
`hours` of 1-Hz ticks of `devices` batteries whose power and state of charge wander. Then it
rolls all of it into per-minute rows with the daemon's retention step. Bytes are the pages
in use (page_count - freelist_count) times the page size, after a checkpoint, over an empty
log's. The floor, in the same run: the same rows in a bare SQLite table, no index, no key.
Setpoint rows (logged on change only), commitments, reports and messages come per
market event, not per tick; they are left out here.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flexedge.config.retention import DAY_S, RetentionSettings
from flexedge.controller.daemon.retention import prune_step
from flexedge.controller.daemon.store import Store

T0 = 1_800_000_000.0  # a minute boundary


def _used_bytes(db: sqlite3.Connection) -> int:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, free, size = (
        db.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("page_count", "freelist_count", "page_size")
    )
    return int((pages - free) * size)


def _ticks(devices: int, seconds: int) -> Iterator[list[dict[str, Any]]]:
    """Each tick's telemetry rows, the same for every call (a fixed seed)."""
    rng = random.Random(1)
    power = [0.0] * devices
    soc = [0.5] * devices
    for second in range(seconds):
        rows = []
        for d in range(devices):
            power[d] = max(-5.0, min(5.0, power[d] + rng.gauss(0, 0.2)))
            soc[d] = max(0.05, min(0.95, soc[d] - power[d] / 3600 / 10))
            rows.append(
                {
                    "ts": T0 + second + rng.random() * 0.05,
                    "asset": f"battery-{d:03d}",
                    "p_kw": round(power[d], 4),
                    "soc": round(soc[d], 4),
                    "available": 1,
                    "setpoint_kw": round(power[d], 2),
                }
            )
        yield rows


def _floor_bytes(path: Path, devices: int, seconds: int) -> int:
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (ts, asset, p_kw, soc, available, setpoint_kw)")
        empty = _used_bytes(db)
        for rows in _ticks(devices, seconds):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", [tuple(r.values()) for r in rows]
            )
            db.execute("COMMIT")
        return _used_bytes(db) - empty
    finally:
        db.close()


def measure(devices: int, hours: float) -> dict[str, float]:
    seconds = int(hours * 3600)
    with tempfile.TemporaryDirectory(prefix="flexedge-bench-disk-") as tmp:
        store = Store(Path(tmp) / "log.sqlite")
        try:
            empty = _used_bytes(store.db.conn)
            for rows in _ticks(devices, seconds):
                with store.transaction():
                    store.log_telemetry(rows)
            raw = _used_bytes(store.db.conn) - empty
            all_to_minutes = RetentionSettings(telemetry_raw_days=1 / DAY_S)
            while prune_step(store, all_to_minutes, T0 + seconds + 120):
                pass
            minutes = _used_bytes(store.db.conn) - empty
        finally:
            store.close()
        floor = _floor_bytes(Path(tmp) / "floor.sqlite", devices, seconds)
    device_days = devices * seconds / DAY_S
    defaults = RetentionSettings()
    raw_per_day = raw / device_days
    minutes_per_day = minutes / device_days
    return {
        "raw_bytes_per_device_day": raw_per_day,
        "floor_bytes_per_device_day": floor / device_days,
        "minute_bytes_per_device_day": minutes_per_day,
        "default_retention_bytes_per_device": raw_per_day * defaults.telemetry_raw_days
        + minutes_per_day * defaults.telemetry_minutes_days,
    }


def run_disk_bench(devices: int = 10, hours: float = 6.0) -> int:
    figures = measure(devices, hours)
    mb = 1e6
    print(f"flexedge bench disk: {devices} devices, {hours:g} h of 1-Hz ticks")
    print(
        f"  raw telemetry:       {figures['raw_bytes_per_device_day'] / mb:7.2f} MB "
        "per device and day"
    )
    print(
        f"  floor (bare table):  {figures['floor_bytes_per_device_day'] / mb:7.2f} MB "
        "per device and day, the same rows without index or key"
    )
    print(
        f"  per-minute averages: {figures['minute_bytes_per_device_day'] / mb:7.3f} MB "
        "per device and day"
    )
    print(
        f"  default retention (7 d raw + 365 d minutes) levels off at "
        f"{figures['default_retention_bytes_per_device'] / mb:.0f} MB per device"
    )
    return 0
