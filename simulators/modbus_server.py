"""Serve simulated batteries over Modbus TCP, laid out by the same register maps the driver reads.

Built on pymodbus 3.16's SimDevice datastore. Each device gets non-shared register blocks
(coils, discrete inputs, holding, input), because a map's input and holding tables are separate
address spaces. The device's `action` runs on every request: it advances the BatteryModel to
the clock, writes the model's state into the live registers with drivers.registermap.encode,
and turns writes to power_setpoint / setpoint_timeout into model calls. So the simulator and
the driver share one reading of every map.

Usage::

    sim = await serve_site(site, port=0)       # port 0: each device on a free port
    host, port = sim.address("battery-1")
    sim.model("battery-1").soc
    sim.faults("battery-1").latency_s = 0.5    # see simulators.faults
    await sim.stop()
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from config.loader import Site
from controller.errors import ConfigError
from drivers.registermap import LoadedMap, Point, decode, encode
from simulators.battery import BatteryModel
from simulators.faults import DeviceFaults, FaultState
from simulators.modbus_serial import ModbusSerialSimServer, serial_servers

logger = logging.getLogger(__name__)

# (device name, point name, value in site units, time.perf_counter() at arrival)
OnWrite = Callable[[str, str, float, float], None]
Clock = Callable[[], float]

_HOLDING_FCS = frozenset({3, 6, 16, 22, 23})
_INPUT_FCS = frozenset({4})
_SF_EXPONENTS = range(-6, 7)


class SimulatedBattery:
    """One battery behind one unit id: its model, its map and the register action."""

    def __init__(self, name: str, model: BatteryModel, register_map: LoadedMap, *,
                 unit_id: int = 1, clock: Clock = time.monotonic,
                 on_write: OnWrite | None = None) -> None:
        self.name = name
        self.model = model
        self.register_map = register_map
        self.unit_id = unit_id
        self.on_write = on_write
        self._clock = clock
        self.faults = DeviceFaults(name)
        self.faults.add_listener(self._faults_changed)
        # While frozen: the value of every model-owned point when the fault started.
        self._frozen: dict[str, float] | None = None
        self._readers: dict[str, Callable[[], float]] = {
            "power": lambda: model.p_kw,
            "soc": lambda: model.soc,
            "max_charge_power": lambda: model.max_charge_kw,
            "max_discharge_power": lambda: model.max_discharge_kw,
            "power_setpoint": lambda: model.setpoint_kw,
            "setpoint_timeout": lambda: model.timeout_s,
        }
        points = register_map.spec.points
        # write_with partners (SunSpec 124 InWRte) show their leader's value; the model is
        # steered by the leader alone, so a write to a partner by itself changes nothing.
        self._leaders = {partner: n for n, p in points.items() for partner in p.write_with}
        for partner, leader in self._leaders.items():
            if leader in self._readers:
                self._readers[partner] = self._readers[leader]
        for point_name, point in points.items():
            if point.scale_point is not None and point.scale_point not in self._readers:
                raise ConfigError(register_map.source, f"points.{point_name}.scale_point",
                                  f"the simulator has no value for {point.scale_point!r}")
        self._sf_points = {p.scale_factor_point for p in points.values() if p.scale_factor_point}
        self._sf = {name: self._choose_exponent(name) for name in sorted(self._sf_points)}
        for sf_name, exponent in self._sf.items():
            self._readers[sf_name] = partial(float, exponent)
        for point_name, point in points.items():
            if point.scale_factor_point is None:
                self._check_fits(point_name, point, 0)

    # -- layout --------------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """A fresh SimDevice; registers are refreshed from the model on every request."""
        tables: dict[str, list[SimData]] = {"holding": [], "input": []}
        for name, point in self.register_map.spec.points.items():
            readonly = point.access != "rw" or name in self._sf_points
            tables[point.table].append(SimData(address=point.address, count=point.width,
                                               values=0, datatype=DataType.REGISTERS,
                                               readonly=readonly))
        # Constants and unimplemented runs (SunSpec marker, model headers, padding): fixed.
        for block in self.register_map.spec.fixed_blocks():
            tables[block.table].append(SimData(address=block.address, values=block.registers(),
                                               datatype=DataType.REGISTERS, readonly=True))
        # SimDevice needs at least one entry per block; these answer ILLEGAL_ADDRESS.
        for entries in tables.values():
            if not entries:
                entries.append(SimData(address=0, datatype=DataType.INVALID))
        bits = [SimData(address=0, values=False, datatype=DataType.BITS, readonly=True)]
        return SimDevice(id=self.unit_id, simdata=(bits, list(bits), tables["holding"],
                                                   tables["input"]), action=self._action)

    def _points_in(self, table: str, first: int, count: int) -> list[tuple[str, Point]]:
        return [(name, p) for name, p in self.register_map.spec.points.items()
                if p.table == table and p.address < first + count
                and first < p.address + p.width]

    def _sf_of(self, point: Point) -> int:
        return 0 if point.scale_factor_point is None else self._sf[point.scale_factor_point]

    def _base_of(self, point: Point) -> float:
        """The site value a percentage point is a share of (1 for other points)."""
        return 1.0 if point.scale_point is None else self._readers[point.scale_point]()

    def _limits(self, name: str) -> list[float]:
        """Values this device will put in a point, to check at startup that they fit."""
        m = self.model
        name = self._leaders.get(name, name)
        return {
            "power": [m.max_discharge_kw, -m.max_charge_kw],
            "power_setpoint": [m.max_discharge_kw, -m.max_charge_kw],
            "soc": [1.0],
            "max_charge_power": [m.max_charge_kw],
            "max_discharge_power": [m.max_discharge_kw],
            "setpoint_timeout": [m.timeout_s],
        }.get(name, [])

    def _fits(self, point: Point, name: str, exponent: int) -> bool:
        try:
            for value in self._limits(name):
                encode(point, value, exponent, self._base_of(point))
        except ValueError:
            return False
        return True

    def _check_fits(self, name: str, point: Point, exponent: int) -> None:
        if not self._fits(point, name, exponent):
            raise ConfigError(self.register_map.source, f"points.{name}",
                              f"cannot hold {self._limits(name)} for device {self.name}")

    def _choose_exponent(self, sf_name: str) -> int:
        """The finest SunSpec exponent at which every dependent point holds its range."""
        dependents = [(n, p) for n, p in self.register_map.spec.points.items()
                      if p.scale_factor_point == sf_name]
        for exponent in _SF_EXPONENTS:
            if all(self._fits(p, n, exponent) for n, p in dependents):
                return exponent
        raise ConfigError(self.register_map.source, f"points.{sf_name}",
                          f"no exponent in {_SF_EXPONENTS} fits the ranges of device {self.name}")

    # -- runtime -------------------------------------------------------------------------

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: list[int] | list[bool] | None,
                      ) -> ExcCodes | None:
        """Called by pymodbus before it answers; `registers` is the live block (in place)."""
        arrived = time.perf_counter()
        refused = await self.faults.before_answer()
        if refused is not None:
            return refused
        if function_code in _HOLDING_FCS:
            table = "holding"
        elif function_code in _INPUT_FCS:
            table = "input"
        else:
            return ExcCodes.ILLEGAL_ADDRESS  # no coils or discrete inputs on this device
        self.model.advance(self._clock())
        if set_values is not None and table == "holding":
            written = self._decode_write(start_address, address, registers,
                                         cast(list[int], set_values))
            if written is None:
                return ExcCodes.ILLEGAL_VALUE
            if self.faults.ignore_writes:
                logger.debug("%s: ignoring write %s (fault)", self.name, written)
            else:
                self._apply(written, arrived)
        self._refresh(table, start_address, registers)
        if set_values and (self.faults.ignore_writes or self.faults.frozen):
            # pymodbus copies set_values into the block after we return: turn that copy into
            # a no-op so the registers keep their (old or frozen) values.
            offset = address - start_address
            cast(list[int], set_values)[:] = registers[offset:offset + len(set_values)]
        return None

    def _decode_write(self, start: int, address: int, registers: list[int],
                      values: list[int]) -> list[tuple[str, float]] | None:
        """Values of every point the write touches, read from the block as it will be."""
        image = list(registers)
        offset = address - start
        image[offset:offset + len(values)] = values
        written: list[tuple[str, float]] = []
        for name, point in self._points_in("holding", address, len(values)):
            begin = point.address - start
            value = decode(point, image[begin:begin + point.width], self._sf_of(point),
                           self._base_of(point))
            if not math.isfinite(value) or (name == "setpoint_timeout" and value <= 0):
                logger.info("%s: rejected write of %s to %s", self.name, value, name)
                return None
            written.append((name, value))
        return written

    def _apply(self, written: Iterable[tuple[str, float]], arrived: float) -> None:
        now = self.model.time
        for name, value in written:
            if name == "power_setpoint":
                self.model.command(value, now)
            elif name == "setpoint_timeout":
                self.model.set_timeout(value, now)
            if self.on_write is not None:
                self.on_write(self.name, name, value, arrived)

    def _refresh(self, table: str, start: int, registers: list[int]) -> None:
        for name, point in self.register_map.spec.points.items():
            reader = self._readers.get(name)
            if point.table != table or reader is None:
                continue  # points the model does not own keep what was written
            value = reader() if self._frozen is None else self._frozen.get(name, reader())
            begin = point.address - start
            registers[begin:begin + point.width] = encode(point, value, self._sf_of(point),
                                                          self._base_of(point))

    def _faults_changed(self, before: FaultState, after: FaultState) -> None:
        if after.frozen and not before.frozen:
            # Snapshot the values rather than skip refreshes: registers never read before
            # the fault would otherwise show zeros instead of the state at its start.
            self.model.advance(self._clock())
            self._frozen = {name: reader() for name, reader in self._readers.items()}
        elif not after.frozen:
            self._frozen = None


class ModbusSimServer:
    """One listening socket serving one or more simulated batteries (one per unit id)."""

    def __init__(self, devices: Sequence[SimulatedBattery], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
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
        server = ModbusTcpServer([d.sim_device() for d in self.devices],
                                 address=(self.host, self._port),
                                 trace_connect=self._connection_event)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way
            raise OSError(f"cannot listen on {self.host}:{self._port}: {exc}") from None
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
    def from_site(cls, site: Site, *, host: str | None = None, port: int | None = None,
                  clock: Clock = time.monotonic, on_write: OnWrite | None = None,
                  ) -> SiteSimulator:
        """Build (not start) the simulator. `host`/`port` override every device's; port 0
        gives each device its own free port. Devices sharing a fixed host:port share one
        server and must differ in unit_id. modbus-rtu devices are served on their
        simulator.serial_port (simulators.modbus_serial); host/port do not apply to them."""
        groups: dict[tuple[str, int], list[SimulatedBattery]] = {}
        free: list[tuple[str, SimulatedBattery]] = []
        rtu: list[SimulatedBattery] = []
        for index, device in enumerate(site.config.devices):
            try:
                model = BatteryModel.from_config(device, now=clock())
            except ValueError as exc:
                raise ConfigError(str(site.path), f"devices[{index}] ({device.name})",
                                  str(exc)) from None
            battery = SimulatedBattery(device.name, model, site.maps[device.name],
                                       unit_id=device.unit_id, clock=clock)
            if device.transport == "modbus-rtu":
                rtu.append(battery)
                continue
            where = (host or device.host, device.port if port is None else port)
            if where[1] == 0:
                free.append((where[0], battery))
                continue
            group = groups.setdefault(where, [])
            if any(b.unit_id == device.unit_id for b in group):
                raise ConfigError(str(site.path), f"devices[{index}] ({device.name}).unit_id",
                                  f"another device already uses unit {device.unit_id} "
                                  f"on {where[0]}:{where[1]}")
            group.append(battery)
        servers: list[ModbusSimServer | ModbusSerialSimServer] = [
            ModbusSimServer(g, host=h, port=p) for (h, p), g in groups.items()]
        servers += [ModbusSimServer([b], host=h, port=0) for h, b in free]
        servers += serial_servers(site, rtu)
        simulator = cls(servers)
        simulator.on_write = on_write
        return simulator

    @property
    def models(self) -> Mapping[str, BatteryModel]:
        return {name: d.model for name, (d, _) in self._by_name.items()}

    def model(self, device: str) -> BatteryModel:
        return self._by_name[device][0].model

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


async def serve_site(site: Site, *, host: str | None = None, port: int | None = None,
                     clock: Clock = time.monotonic, on_write: OnWrite | None = None,
                     ) -> SiteSimulator:
    """Build and start a SiteSimulator for `site`; call `await handle.stop()` when done."""
    simulator = SiteSimulator.from_site(site, host=host, port=port, clock=clock,
                                        on_write=on_write)
    await simulator.start()
    return simulator
