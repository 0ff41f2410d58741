"""`flexedge demo`: a whole site in both balancing markets on one machine, in about 90 s.

A private Mosquitto, the device simulators (`flexedge sim`) and the daemon (`flexedge run`)
run as real processes on the bundled demo site: a battery, a heat pump with a power limit and
a generator. This process plays the markets with the market simulator's `demo` scenario (spot
trades that drive the D3A balancing agent, a Power TAC exercise and an economic control),
then scores every commitment from the daemon's SQLite log.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from flexedge.config.loader import DEMO_SITE, load_site
from flexedge.tools.harness.broker import PrivateBroker, free_port
from flexedge.tools.harness.processes import spawn_flexedge, stop_process
from flexedge.tools.scorecard import build_scorecard, open_log, render_text

TOLERANCE = 0.02


def _demo_site(config: Path, workdir: Path, mqtt_port: int) -> Path:
    """The site file with the private broker, free ports and the log in the work dir."""
    raw: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["mqtt"] = {**(raw.get("mqtt") or {}), "host": "127.0.0.1", "port": mqtt_port}
    raw["log_db"] = str(workdir / "flexedge-demo.sqlite")
    for device in raw["devices"]:
        if device.get("transport", "modbus-tcp") == "modbus-tcp":
            device["host"] = "127.0.0.1"
            device["port"] = free_port()
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _within_tolerance(db: Path) -> tuple[int, list[str]]:
    """How many commitments were reported, and those off by more than the tolerance."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT commitment_id, accepted_kwh, delivered_kwh FROM reports"
        ).fetchall()
    finally:
        conn.close()
    off = [
        f"{cid}: {delivered:+.4f} of {accepted:+.4f} kWh"
        for cid, accepted, delivered in rows
        if abs(delivered - accepted) > TOLERANCE * abs(accepted)
    ]
    return len(rows), off


def run_demo(config: Path = DEMO_SITE, scenario: str = "demo", engine: str = "builtin") -> int:
    from flexedge.simulators.market.runner import run_market

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="flexedge-demo-"))
    db = workdir / "flexedge-demo.sqlite"
    with PrivateBroker() as broker:
        site_path = _demo_site(config, workdir, broker.port)
        print(f"private Mosquitto on 127.0.0.1:{broker.port}; work dir {workdir}", flush=True)
        # --mqtt: the scenario may switch simulator faults (a device lost mid-delivery).
        sim = spawn_flexedge(
            ["sim", "--config", str(site_path), "--mqtt", f"127.0.0.1:{broker.port}"],
            workdir / "sim.log",
        )
        daemon = spawn_flexedge(["run", "--config", str(site_path)], workdir / "daemon.log")
        print("simulators and daemon started; playing the markets", flush=True)
        try:
            market_rc = run_market(load_site(site_path), scenario, engine=engine)
        finally:
            stop_process(daemon)
            stop_process(sim)
    print()
    with open_log(db) as conn:
        print(render_text(build_scorecard(conn, db)))
    reported, off = _within_tolerance(db)
    print(f"SQLite log: {db}  (process logs: {workdir})")
    print(f"demo took {time.monotonic() - started:.0f} s")
    if market_rc == 0 and reported and not off:
        print(f"all {reported} commitments delivered within {TOLERANCE:.0%}")
        return 0
    print(
        f"DEMO FAILED: {reported} reported; off by more than {TOLERANCE:.0%}: "
        f"{'; '.join(off) or 'none'}; market simulator exit {market_rc}"
    )
    return 1
