"""The two pollers measured: flexedge's real ControlLoop, and bare pymodbus as the floor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence

from pymodbus.client import AsyncModbusTcpClient

from flexedge.config.loader import Site
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.drivers.base import Reading
from flexedge.drivers.modbus_tcp import ModbusTcpDevice, ReadBlock, plan_reads
from flexedge.errors import DeviceError
from flexedge.mqtt import MqttLink
from flexedge.tools.bench_poll.schedule import PollStats, at_rate, poll_stats
from flexedge.tools.bench_poll.simulator_process import SimulatorProcess

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 10.0  # as the daemon's checkpoint job


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
    return poll_stats("flexedge", len(devices), window)


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
    return poll_stats("bare pymodbus", len(clients), window)
