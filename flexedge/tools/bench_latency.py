"""`flexedge bench latency`: from a balancing control event published on MQTT to the Modbus
write it causes arriving at the simulated battery, next to the raw floor measured in the same
run (a bare paho publish -> receive through the same broker plus a bare pymodbus write to the
same simulator).

The daemon runs as its own process, as in production. The market publisher and the simulator
live in this process so both ends are timed with one clock (time.perf_counter). The site uses
a one-hour control period, so the only writes are the event-driven ones under test.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pymodbus.client import AsyncModbusTcpClient

from flexedge.config.loader import EXAMPLE_SITE, load_site
from flexedge.config.registermap import Point, encode
from flexedge.simulators.devices.modbus_server import serve_site
from flexedge.tools.harness.broker import PrivateBroker, free_port
from flexedge.tools.harness.processes import spawn_flexedge, stop_process
from flexedge.tools.harness.scripted_market import MarketClient

SLOT = 3600


def _bench_site(workdir: Path, mqtt_port: int) -> Path:
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw.update(
        site="bench-site",
        slot_seconds=SLOT,
        control_period_s=3600,
        log_db=str(workdir / "bench.sqlite"),
    )
    raw["mqtt"]["port"] = mqtt_port
    raw["balancing"]["enable_balancing_market"] = False
    raw["tariffs"][0]["exercise_ratio"] = 2.0
    device = raw["devices"][0]
    device.update(
        port=free_port(),
        capacity_kwh=1000,
        max_charge_kw=300,
        max_discharge_kw=300,
        setpoint_timeout_s=3600,
    )
    path = workdir / "site.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _bare_mqtt(port: int, count: int) -> list[float]:
    """paho publisher -> Mosquitto -> paho subscriber, QoS 1, one message at a time."""
    received = threading.Event()
    arrival = [0.0]

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        arrival[0] = time.perf_counter()
        received.set()

    topic = f"bench/{uuid.uuid4().hex}"
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *args: subscribed.set()
    for client in (sub, pub):
        client.connect("127.0.0.1", port)
        client.loop_start()
    sub.subscribe(topic, qos=1)
    subscribed.wait(5)
    samples = []
    try:
        for _ in range(count):
            received.clear()
            start = time.perf_counter()
            pub.publish(topic, b'{"v":1}', qos=1)
            if not received.wait(5):
                raise RuntimeError("bare MQTT round trip timed out")
            samples.append(arrival[0] - start)
    finally:
        for client in (sub, pub):
            client.loop_stop()
            client.disconnect()
    return samples


async def _bare_modbus(
    port: int, setpoint: Point, count: int, arrivals: asyncio.Queue[float]
) -> list[float]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0)
    await client.connect()
    samples = []
    try:
        for i in range(count):
            start = time.perf_counter()
            # The whole point in one request: the setpoint spans two registers (s32).
            registers = encode(setpoint, 0.01 * ((i % 100) + 1))
            await client.write_registers(setpoint.address, registers, device_id=1)
            samples.append(await asyncio.wait_for(arrivals.get(), 5) - start)
    finally:
        client.close()
    return samples


async def _through_flexedge(
    site_path: Path, broker: PrivateBroker, count: int, arrivals: asyncio.Queue[float]
) -> list[float]:
    site = load_site(site_path)
    cfg = site.config
    market = MarketClient("127.0.0.1", broker.port, cfg.mqtt.prefix, cfg.site)
    await market.start()
    samples = []
    try:
        await market.wait_for(
            lambda m: m.get("type") == "status" and m.get("state") == "online", 30
        )
        while not arrivals.empty():
            arrivals.get_nowait()
        for _ in range(count):
            now = time.time()
            start = time.perf_counter()
            market.control("tariff-1", now - now % SLOT, 0.01, payment=0.001)
            samples.append(await asyncio.wait_for(arrivals.get(), 5) - start)
    finally:
        await market.stop()
    return samples


async def _bench(
    site_path: Path, broker: PrivateBroker, events: int, workdir: Path
) -> dict[str, list[float]]:
    site = load_site(site_path)
    arrivals: asyncio.Queue[float] = asyncio.Queue()
    setpoint = site.maps["battery-1"].point("power_setpoint")

    def on_write(device: str, point: str, value: float, t: float) -> None:
        if point == "power_setpoint":
            arrivals.put_nowait(t)

    sim = await serve_site(site, on_write=on_write)
    port = sim.address("battery-1")[1]
    try:
        daemon = spawn_flexedge(["run", "--config", str(site_path)], workdir / "daemon.log")
        try:
            flexedge = await _through_flexedge(site_path, broker, events, arrivals)
        finally:
            # In a thread: the simulator in this loop must keep answering while it stops.
            await asyncio.to_thread(stop_process, daemon)
            await asyncio.sleep(0.5)
        while not arrivals.empty():
            arrivals.get_nowait()
        mqtt = await asyncio.to_thread(_bare_mqtt, broker.port, events)
        modbus = await _bare_modbus(port, setpoint, events, arrivals)
    finally:
        await sim.stop()
    return {"flexedge": flexedge, "mqtt": mqtt, "modbus": modbus}


def run_latency_bench(events: int = 1000) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="flexedge-bench-"))
    with PrivateBroker() as broker:
        site_path = _bench_site(workdir, broker.port)
        print(
            f"latency: {events} balancing control events, private broker, work dir {workdir}",
            flush=True,
        )
        result = asyncio.run(_bench(site_path, broker, events, workdir))
    ms = {name: [v * 1000 for v in values] for name, values in result.items()}
    floor = [a + b for a, b in zip(ms["mqtt"], ms["modbus"], strict=False)]
    rows = [
        ("flexedge: event -> Modbus write", ms["flexedge"]),
        ("floor: bare MQTT publish -> receive", ms["mqtt"]),
        ("floor: bare pymodbus write", ms["modbus"]),
        ("floor: MQTT + Modbus", floor),
    ]
    print(f"{'path':<38} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in rows:
        print(
            f"{name:<38} {_pct(values, 0.5):>8.3f} {_pct(values, 0.99):>8.3f} "
            f"{statistics.fmean(values):>8.3f}"
        )
    print(
        f"ratio flexedge / floor: p50 {_pct(ms['flexedge'], 0.5) / _pct(floor, 0.5):.2f}x, "
        f"p99 {_pct(ms['flexedge'], 0.99) / _pct(floor, 0.99):.2f}x"
    )
    # Every event stays an open commitment for the rest of the hour, so event i is decided
    # with i others open on the same battery: the figure by how many were open.
    print(f"{'open commitments':<38} {'p50 ms':>8} {'p99 ms':>8}")
    flexedge = ms["flexedge"]
    for lo, hi in ((0, 100), (100, 500), (500, len(flexedge))):
        part = flexedge[lo:hi]
        if part:
            print(f"{f'{lo}-{hi}':<38} {_pct(part, 0.5):>8.3f} {_pct(part, 0.99):>8.3f}")
    return 0
