"""Serve simulated devices over Modbus TCP, laid out by the same register maps the driver reads.

Built on pymodbus 3.16's SimDevice datastore. Each device gets non-shared register blocks
(coils, discrete inputs, holding, input), because a map's input and holding tables are separate
address spaces. Each device is a sim_device.SimulatedDevice: a battery, flexible
load or generator model whose registers are refreshed, and whose writes are applied, on every
request through flexedge.config.registermap's encode/decode, so the simulator and the driver share
one reading of every map.

Usage::

    sim = await serve_site(site, port=0)       # port 0: each device on a free port
    host, port = sim.address("battery-1")
    sim.model("battery-1").soc                 # or sim.model("load-1", LoadModel).p_kw
    sim.faults("battery-1").latency_s = 0.5    # see faults
    await sim.stop()
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar, cast, overload

from pymodbus.server import ModbusTcpServer

from flexedge.config.loader import Site
from flexedge.errors import ConfigError, PortUnavailable
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.device_models import SimModel, adapter_for
from flexedge.simulators.devices.faults import DeviceFaults, FaultState
from flexedge.simulators.devices.generator import GeneratorModel
from flexedge.simulators.devices.load import LoadModel
from flexedge.simulators.devices.modbus_serial import ModbusSerialSimServer, serial_servers
from flexedge.simulators.devices.sim_clock import utc_offset_s
from flexedge.simulators.devices.sim_device import Clock, OnWrite, SimulatedBattery, SimulatedDevice

logger = logging.getLogger(__name__)

__all__ = [
    "Clock",
    "ModbusSimServer",
    "OnWrite",
    "SimulatedBattery",
    "SimulatedDevice",
    "SiteSimulator",
    "serve_site",
]

M = TypeVar("M", BatteryModel, LoadModel, GeneratorModel)


def _bind_error(host: str, port: int) -> OSError:
    """Why (host, port) cannot be listened on: bind it ourselves to get the OS's errno."""
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        return exc
    # Free again by now (it was busy a moment ago): as busy, which a retry may get past.
    return OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))


class ModbusSimServer:
    """One listening socket serving one or more simulated devices (one per unit id)."""

    def __init__(
        self, devices: Sequence[SimulatedDevice], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        ids = [d.unit_id for d in devices]
        if not devices or len(set(ids)) != len(ids):
            raise ValueError(f"need at least one device and distinct unit ids, got {ids}")
        self.devices = tuple(devices)
        self.host = host
        self._port = port
        self._server: ModbusTcpServer | None = None
        for device in self.devices:
            device.faults.add_listener(self._faults_changed)

    @property
    def port(self) -> int:
        """The bound port once started (the real one when asked for port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen. A restart after stop() reuses the port bound the first time."""
        if self._server is not None:
            return
        server = ModbusTcpServer(
            [d.sim_device() for d in self.devices],
            address=(self.host, self._port),
            trace_connect=self._connection_event,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError:  # pymodbus reports a failed bind this way, errno swallowed
            names = ", ".join(d.name for d in self.devices)
            raise PortUnavailable(
                f"simulated {names}", self.host, self._port, _bind_error(self.host, self._port)
            ) from None
        listener = cast(asyncio.Server, server.transport)
        self._port = int(listener.sockets[0].getsockname()[1])
        self._server = server
        logger.debug("modbus simulator listening on %s:%s", self.host, self._port)

    async def stop(self) -> None:
        """Close the listener and every client connection; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    # -- connection drop fault: the listener stays open, so the port is kept ---------------

    @property
    def dropping(self) -> bool:
        """True while any device of this server has the drop fault."""
        return any(d.faults.drop for d in self.devices)

    def close_clients(self) -> None:
        """Close every open client connection; the listener keeps accepting."""
        if self._server is None:
            return
        # close() removes the handler from active_connections: iterate over a copy.
        for handler in list(self._server.active_connections.values()):
            handler.close()

    def _faults_changed(self, before: FaultState, after: FaultState) -> None:
        if after.drop and not before.drop:
            logger.info("%s:%s: dropping every connection", self.host, self._port)
            self.close_clients()

    def _connection_event(self, connected: bool) -> None:
        # pymodbus calls this from connection_made, once the transport is set, so a client
        # that connects while dropping is closed before it can send a request.
        if connected and self.dropping:
            self.close_clients()


class SiteSimulator:
    """Every device of a site, each on its host:port or serial port, as one handle."""

    def __init__(self, servers: Sequence[ModbusSimServer | ModbusSerialSimServer]) -> None:
        self.servers = tuple(servers)
        self._by_name = {d.name: (d, s) for s in self.servers for d in s.devices}
        self._on_write: OnWrite | None = None

    @classmethod
    def from_site(
        cls,
        site: Site,
        *,
        host: str | None = None,
        port: int | None = None,
        clock: Clock = time.monotonic,
        on_write: OnWrite | None = None,
    ) -> SiteSimulator:
        """Build (not start) the simulator. `host`/`port` override every device's; port 0
        gives each device its own free port. Devices sharing a fixed host:port share one
        server and must differ in unit_id. modbus-rtu devices are served on their
        simulator.serial_port (modbus_serial); host/port do not apply to them."""
        groups: dict[tuple[str, int], list[SimulatedDevice]] = {}
        free: list[tuple[str, SimulatedDevice]] = []
        rtu: list[SimulatedDevice] = []
        utc_offset = utc_offset_s(clock)
        for index, device in enumerate(site.config.devices):
            try:
                adapter = adapter_for(device, now=clock(), utc_offset_s=utc_offset)
            except ValueError as exc:
                raise ConfigError(
                    str(site.path), f"devices[{index}] ({device.name})", str(exc)
                ) from None
            served = SimulatedDevice(
                device.name, adapter, site.maps[device.name], unit_id=device.unit_id, clock=clock
            )
            if device.transport == "modbus-rtu":
                rtu.append(served)
                continue
            where = (host or device.host, device.port if port is None else port)
            if where[1] == 0:
                free.append((where[0], served))
                continue
            group = groups.setdefault(where, [])
            if any(b.unit_id == device.unit_id for b in group):
                raise ConfigError(
                    str(site.path),
                    f"devices[{index}] ({device.name}).unit_id",
                    f"another device already uses unit {device.unit_id} on {where[0]}:{where[1]}",
                )
            group.append(served)
        servers: list[ModbusSimServer | ModbusSerialSimServer] = [
            ModbusSimServer(g, host=h, port=p) for (h, p), g in groups.items()
        ]
        servers += [ModbusSimServer([b], host=h, port=0) for h, b in free]
        servers += serial_servers(site, rtu)
        simulator = cls(servers)
        simulator.on_write = on_write
        return simulator

    @property
    def models(self) -> Mapping[str, SimModel]:
        return {name: d.model for name, (d, _) in self._by_name.items()}

    @overload
    def model(self, device: str) -> SimModel: ...

    @overload
    def model(self, device: str, kind: type[M]) -> M: ...

    def model(self, device: str, kind: type[M] | None = None) -> SimModel:
        """The device's physics model; with `kind` (BatteryModel, LoadModel, GeneratorModel)
        checked to be of it, for typed access. TypeError for a device of another kind."""
        model = self._by_name[device][0].model
        if kind is not None and not isinstance(model, kind):
            raise TypeError(
                f"{device} is simulated by a {type(model).__name__}, not a {kind.__name__}"
            )
        return model

    def faults(self, device: str) -> DeviceFaults:
        """The device's faults, switchable while running (call on the simulator's loop).
        A drop closes the connections of every device sharing the device's server."""
        return self._by_name[device][0].faults

    def address(self, device: str) -> tuple[str, int]:
        """Where a device is served; the port is the bound one once started. A device on a
        serial line gives (its simulator's serial port, 0)."""
        server = self._by_name[device][1]
        return server.host, server.port

    @property
    def on_write(self) -> OnWrite | None:
        """Hook called inside the request for every accepted point write (benchmarks)."""
        return self._on_write

    @on_write.setter
    def on_write(self, hook: OnWrite | None) -> None:
        self._on_write = hook
        for device, _ in self._by_name.values():
            device.on_write = hook

    async def start(self) -> None:
        """Start every server; if one cannot listen, the others are stopped again."""
        try:
            for server in self.servers:
                await server.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()

    async def __aenter__(self) -> SiteSimulator:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()


async def serve_site(
    site: Site,
    *,
    host: str | None = None,
    port: int | None = None,
    clock: Clock = time.monotonic,
    on_write: OnWrite | None = None,
) -> SiteSimulator:
    """Build and start a SiteSimulator for `site`; call `await handle.stop()` when done."""
    simulator = SiteSimulator.from_site(site, host=host, port=port, clock=clock, on_write=on_write)
    await simulator.start()
    return simulator
