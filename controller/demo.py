"""`flexedge demo`: a whole site on one machine in about a minute.

A private Mosquitto, the device simulator and the daemon run as real processes; this process
plays the market: it trades part of a battery's D3A offer in one slot, exercises the tariff's
standing Power TAC order in the next, and prints what was requested and delivered.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from config.loader import load_site
from config.schema import Battery
from controller.broker import PrivateBroker, free_port
from controller.processes import spawn_flexedge, stop_process
from controller.scripted_market import MarketClient

TRADE_SHARE = 0.5  # of the discharge offer
CONTROL_SHARE_OF_BOUND = 0.6  # of what the standing order allows in the rest of the slot


class Progress:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)


def _demo_site(config: Path, workdir: Path, mqtt_port: int) -> Path:
    raw: dict[str, Any] = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["mqtt"] = {**(raw.get("mqtt") or {}), "host": "127.0.0.1", "port": mqtt_port}
    raw["log_db"] = str(workdir / "flexedge-demo.sqlite")
    for device in raw["devices"]:
        device["host"] = "127.0.0.1"
        device["port"] = free_port()
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


async def _play(site_path: Path, say: Progress) -> list[dict[str, Any]]:
    site = load_site(site_path)
    cfg = site.config
    market = MarketClient(cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix, cfg.site)
    await market.start()
    try:
        await market.wait_for(lambda m: m.get("type") == "status"
                              and m.get("state") == "online", 30)
        say.say("daemon online; waiting for the battery's D3A offers")
        offer = await market.wait_for(lambda m: m.get("type") == "balancing_offer"
                                      and m["energy_kwh"] > 0
                                      and _seconds_left(m["slot_end"]) > 8, 40)
        say.say(f"offer {offer['id']}: {offer['energy_kwh']:+.4f} kWh at "
                f"{offer['rate_ct_per_kwh']} ct/kWh")
        energy = round(offer["energy_kwh"] * TRADE_SHARE, 4)
        trade_id = market.trade(offer, energy)
        ack = await market.ack_for(trade_id)
        say.say(f"balancing trade {energy:+.4f} kWh -> ack {ack['status']} {ack['reason']}")
        commitments = [ack["commitment_id"]] if ack.get("commitment_id") else []

        order = await market.wait_for(lambda m: m.get("type") == "balancing_order", 10)
        slot = cfg.slot_seconds
        next_slot = (time.time() // slot + 1) * slot
        say.say(f"standing order of {order['tariff_id']}: exercise_ratio "
                f"{order['exercise_ratio']}; exercising it in the next slot")
        await asyncio.sleep(max(0.0, next_slot + 1.0 - time.time()))
        battery = next(d for d in cfg.devices if isinstance(d, Battery))
        hours_left = (next_slot + slot - time.time()) / 3600
        bound = (order["exercise_ratio"] - 1.0) * battery.max_discharge_kw * hours_left
        kwh = round(bound * CONTROL_SHARE_OF_BOUND, 4)
        control_id = market.control(order["tariff_id"], next_slot, kwh,
                                    payment=round(kwh * order["price_per_kwh"], 6))
        ack = await market.ack_for(control_id)
        say.say(f"balancing control event {kwh:+.4f} kWh -> ack {ack['status']} "
                f"{ack['reason']}")
        if ack.get("commitment_id"):
            commitments.append(ack["commitment_id"])
        reports = []
        for cid in commitments:
            report = await market.report_for(cid, timeout=slot + 15)
            say.say(f"delivery report {cid}: {report['status']}, "
                    f"{report['delivered_kwh']:+.4f} of {report['accepted_kwh']:+.4f} kWh")
            reports.append(report)
        return reports
    finally:
        await market.stop()


def _seconds_left(iso_end: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso_end.replace("Z", "+00:00")).timestamp() - time.time()


def _table(reports: list[dict[str, Any]]) -> tuple[str, bool]:
    lines = [f"{'commitment':<30} {'type':<18} {'requested':>10} {'accepted':>10} "
             f"{'delivered':>10} {'error':>7}  status"]
    all_ok = bool(reports)
    for r in reports:
        error = (r["delivered_kwh"] - r["accepted_kwh"]) / r["accepted_kwh"]
        all_ok &= abs(error) <= 0.02
        lines.append(f"{r['commitment_id'][:30]:<30} {r['ref_type']:<18} "
                     f"{r['requested_kwh']:>+10.4f} {r['accepted_kwh']:>+10.4f} "
                     f"{r['delivered_kwh']:>+10.4f} {error:>+7.2%}  {r['status']}")
    return "\n".join(lines), all_ok


def run_demo(config: Path, keep: bool = False) -> int:
    say = Progress()
    workdir = Path(tempfile.mkdtemp(prefix="flexedge-demo-"))
    with PrivateBroker() as broker:
        site_path = _demo_site(config, workdir, broker.port)
        say.say(f"private Mosquitto on 127.0.0.1:{broker.port}; work dir {workdir}")
        sim = spawn_flexedge(["sim", "--config", str(site_path)], workdir / "sim.log")
        daemon = spawn_flexedge(["run", "--config", str(site_path)], workdir / "daemon.log")
        say.say("simulator and daemon started")
        try:
            reports = asyncio.run(_play(site_path, say))
        except TimeoutError as exc:
            say.say(f"demo failed: {exc}; see {workdir}/daemon.log")
            reports = []
        finally:
            stop_process(daemon)
            stop_process(sim)
    table, ok = _table(reports)
    print("\n" + table + "\n")
    print(f"SQLite log: {workdir / 'flexedge-demo.sqlite'}  (logs: {workdir})")
    print("every commitment delivered within 2 %" if ok else "DEMO FAILED: see the table")
    return 0 if ok else 1
