"""A device (battery, flexible load, generator) over Modbus TCP (pymodbus AsyncModbusTcpClient),
in site units.

ModbusDevice holds everything that does not depend on the transport (SunSpec scale
factors, error translation); ModbusTcpDevice and modbus_rtu.ModbusRtuDevice only give
it a client and the lock that serialises requests on that client.

Timing is kept predictable for the controller: one attempt per request (retries=0) bounded by
the device's timeout_s, no background reconnect task; a call made while disconnected tries one
connect first. Every pymodbus/OS failure is translated here into DeviceUnavailable (no answer)
or DeviceProtocolError (an answer that is an error), so nothing above sees pymodbus. Which
requests to send for a map (the read plan, the control point) is in modbus_plan.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from flexedge.config.registermap import LoadedMap, decode, encode
from flexedge.config.schema import DeviceBase, FlexibleLoad
from flexedge.drivers.base import Reading
from flexedge.drivers.modbus_plan import LOAD_SETPOINT, control_point

# ReadBlock and plan_reads: re-exported where the benchmarks and tests have imported them.
from flexedge.drivers.modbus_plan import ReadBlock as ReadBlock
from flexedge.drivers.modbus_plan import plan_reads as plan_reads
from flexedge.errors import (
    ConfigError,
    DeviceProtocolError,
    DeviceUnavailable,
)

logger = logging.getLogger(__name__)

# Exception codes by which a gateway says the device behind it did not answer.
_GATEWAY_CODES = frozenset({ExcCodes.GATEWAY_PATH_UNAVIABLE, ExcCodes.GATEWAY_NO_RESPONSE})


class ModbusDevice:
    """base.Device for a device whose registers a LoadedMap describes, over any
    pymodbus async client. `lock` must be shared by every device that shares `client`: it
    keeps a whole read plan (and a reconnect) from interleaving with another device's.
    `release_limit_kw` is a power_limit load's rating, the limit that releases it."""

    def __init__(
        self,
        name: str,
        unit_id: int,
        timeout_s: float,
        register_map: LoadedMap,
        *,
        client: ModbusBaseClient,
        lock: asyncio.Lock,
        endpoint: str,
        release_limit_kw: float | None = None,
    ) -> None:
        self._name = name
        self.endpoint = endpoint  # where the device is, for messages: "host:port", a tty
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.register_map = register_map
        self.control = control_point(register_map)
        self.release_limit_kw = release_limit_kw
        commanded = (
            ["power_setpoint", "setpoint_enable"]
            if self.control == LOAD_SETPOINT
            else [self.control]
        )
        for written in (*commanded, "setpoint_timeout"):
            if register_map.has(written) and register_map.point(written).table != "holding":
                raise ConfigError(
                    register_map.source,
                    f"points.{written}.table",
                    "must be holding: input registers cannot be written",
                )
        self.read_plan = plan_reads(register_map.spec)
        self._client = client
        self._lock = lock
        self._sf: dict[str, int] = {}  # last-read SunSpec exponents by sf point name
        self._bases: dict[str, float] = {}  # last-read site values of scale points by name
        # The map's init_writes are due on the first connect and after every reconnect.
        self._init_pending = bool(register_map.spec.init_writes)

    @property
    def name(self) -> str:
        return self._name

    # -- Device --------------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure_connected()

    async def read(self) -> Reading:
        values = await self.read_points()
        heartbeat = values.get("heartbeat")
        # Loads have no setpoint to read back (None): the controller confirms their writes
        # by the heartbeat. Only batteries have a state of charge.
        return Reading(
            asset=self._name,
            ts=time.time(),
            p_kw=values["power"],
            soc=values.get("soc"),
            available=True,
            # A load's consumption setpoint is no power setpoint to read back (a release
            # leaves it as it was): loads are confirmed by the heartbeat.
            setpoint_kw=None if self.control == LOAD_SETPOINT else values.get("power_setpoint"),
            heartbeat=None if heartbeat is None else round(heartbeat),
        )

    async def write_setpoint(self, p_kw: float | None) -> None:
        """Command the device (base.Device.write_setpoint): batteries and generators
        get power_setpoint = p_kw; a load gets a cap of -p_kw kW on power_limit (its rating
        for None), or its relay opened for any cap (closed for None), or, with a consumption
        setpoint, power_setpoint = p_kw (it draws -p_kw, less or more than its demand) and
        setpoint_enable 1 (0 for None: its own demand).

        ValueError for None on a setpoint device, NaN, or a value beyond what the map's type
        and scale hold: the controller clips to ratings before this."""
        if p_kw is not None and math.isnan(p_kw):
            raise ValueError(f"{self._name}: setpoint is NaN")
        if self.control == "power_setpoint":
            if p_kw is None:
                raise ValueError(
                    f"{self._name}: a battery or generator needs a setpoint in kW, not None"
                )
            await self.write_point("power_setpoint", p_kw)
        elif self.control == "power_limit":
            if p_kw is not None:
                # max(): a positive p_kw would ask a load to inject; the nearest is 0 kW.
                await self.write_point("power_limit", max(0.0, -p_kw))
            elif self.release_limit_kw is not None:
                await self.write_point("power_limit", self.release_limit_kw)
            else:
                raise ValueError(
                    f"{self._name}: no release_limit_kw (the load's max_kw) to write for a release"
                )
        elif self.control == LOAD_SETPOINT:
            # The setpoint first, then the switch: the load never follows a stale setpoint.
            if p_kw is not None:
                await self.write_point("power_setpoint", min(0.0, p_kw))
            await self.write_point("setpoint_enable", 0 if p_kw is None else 1)
        else:
            await self.write_point("relay", 1 if p_kw is None else 0)

    async def write_heartbeat(self, counter: int) -> bool:
        if not self.register_map.has("heartbeat"):
            return False
        await self.write_point("heartbeat", counter % 65536)
        return True

    async def configure_lease(self, seconds: float) -> bool:
        """Set the device-side setpoint timeout; False when the map has no such point."""
        if not self.register_map.has("setpoint_timeout"):
            return False
        await self.write_point("setpoint_timeout", seconds)
        return True

    async def close(self) -> None:
        self._client.close()

    # -- reads and writes ----------------------------------------------------------------

    async def read_points(self) -> dict[str, float]:
        """Every point of the map in site units, by the precomputed read plan."""
        raw: dict[str, list[int]] = {}
        async with self._lock:
            for block in self.read_plan:
                registers = await self._read_block(block)
                for name in block.points:
                    point = self.register_map.point(name)
                    begin = point.address - block.address
                    raw[name] = registers[begin : begin + point.width]
        points = self.register_map.spec.points
        # Scale-factor points first: they are the exponents of the others.
        self._sf = {
            name: round(decode(points[name], raw[name]))
            for name in {p.scale_factor_point for p in points.values()}
            if name
        }
        # Then scale points: percentage points are shares of their values.
        self._bases = {
            name: decode(points[name], raw[name], self._exponent(name))
            for name in {p.scale_point for p in points.values()}
            if name
        }
        return {
            name: decode(points[name], regs, self._exponent(name), self._base(name))
            for name, regs in raw.items()
        }

    async def write_point(self, name: str, value: float) -> None:
        """Write one point of the map in site units (e.g. a heartbeat). KeyError for a point
        the map lacks, ValueError for a value its registers cannot hold."""
        async with self._lock:
            await self._write_locked(name, value)

    async def _write_locked(self, name: str, value: float) -> None:
        """write_point with the lock held. The point's write_with partners get the same value
        in the same request (they are contiguous), so the device applies them together."""
        spec = self.register_map.spec
        run = sorted((name, *spec.points[name].write_with), key=lambda n: spec.points[n].address)
        registers: list[int] = []
        for member in run:
            await self._ensure_scales(member)
            registers += encode(
                spec.points[member], value, self._exponent(member), self._base(member)
            )
        address = spec.points[run[0]].address
        logger.debug("%s: write %s = %s -> %s", self._name, name, value, registers)
        if len(registers) == 1:
            await self._request(
                f"write {name}",
                lambda: self._client.write_register(address, registers[0], device_id=self.unit_id),
            )
        else:
            await self._request(
                f"write {name}",
                lambda: self._client.write_registers(address, registers, device_id=self.unit_id),
            )

    async def _ensure_scales(self, name: str) -> None:
        """Read the exponents and the scale-point value that encoding `name` needs, when no
        read_points has brought them yet."""
        point = self.register_map.point(name)
        for user in filter(None, (name, point.scale_point)):
            sf_name = self.register_map.point(user).scale_factor_point
            if sf_name is not None and sf_name not in self._sf:
                self._sf[sf_name] = round(await self._read_point(sf_name))
        if point.scale_point is not None and point.scale_point not in self._bases:
            self._bases[point.scale_point] = await self._read_point(point.scale_point)

    async def _read_point(self, name: str) -> float:
        block = plan_reads(self.register_map.spec, [name])[0]
        return decode(
            self.register_map.point(name), await self._read_block(block), self._exponent(name)
        )

    def _exponent(self, name: str) -> int:
        sf_name = self.register_map.point(name).scale_factor_point
        return 0 if sf_name is None else self._sf[sf_name]

    def _base(self, name: str) -> float:
        base = self.register_map.point(name).scale_point
        return 1.0 if base is None else self._bases[base]

    async def _read_block(self, block: ReadBlock) -> list[int]:
        read = (
            self._client.read_holding_registers
            if block.table == "holding"
            else self._client.read_input_registers
        )
        response = await self._request(
            f"read {block.table} {block.address}+{block.count}",
            lambda: read(block.address, count=block.count, device_id=self.unit_id),
        )
        registers = list(response.registers)
        if len(registers) != block.count:
            raise DeviceProtocolError(
                self._name,
                f"asked {block.count} registers at "
                f"{block.table} {block.address}, got {len(registers)}",
            )
        return registers

    # -- transport -----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            if self._init_pending:
                await self._write_init()
            return
        try:
            connected = await self._client.connect()
        except (ModbusException, OSError) as exc:  # pymodbus returns False for most causes
            raise DeviceUnavailable(
                self._name, f"cannot connect to {self.endpoint}: {exc}"
            ) from exc
        if not connected:
            raise DeviceUnavailable(self._name, f"cannot connect to {self.endpoint}")
        logger.info("%s: connected to %s", self._name, self.endpoint)
        # A device that restarted while we were away has forgotten them.
        self._init_pending = bool(self.register_map.spec.init_writes)
        await self._write_init()

    async def _write_init(self) -> None:
        """The map's init_writes (e.g. SunSpec 124 StorCtl_Mod enabling the rate registers),
        before any other request. Retried on the next request if one fails."""
        if not self._init_pending:
            return
        self._init_pending = False  # the writes go through _request, which comes back here
        try:
            for write in self.register_map.spec.init_writes:
                await self._write_locked(write.point, write.value)
        except BaseException:
            self._init_pending = True
            raise

    async def _request(self, what: str, send: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request, with every failure mapped to the flexedge error family."""
        await self._ensure_connected()
        try:
            # Bounded here, not only by the client's timeout: clients shared by devices on
            # one bus cannot carry each device's own timeout_s.
            async with asyncio.timeout(self.timeout_s):
                response = await send()
        except (ConnectionException, ModbusIOException, OSError, TimeoutError) as exc:
            # No (usable) answer. Drop the connection so a late reply cannot be taken for
            # the answer to the next request; the next call reconnects.
            self._client.close()
            # A timeout has no text of its own; say what it was.
            reason = (
                f"no answer within {self.timeout_s} s"
                if isinstance(exc, TimeoutError)
                else str(exc) or type(exc).__name__
            )
            # Debug only: the control loop logs the device going and coming back once,
            # not every failed attempt of its back-off.
            logger.debug("%s: %s failed: %s", self._name, what, reason)
            raise DeviceUnavailable(self._name, f"{what}: {reason}") from exc
        except ModbusException as exc:
            raise DeviceProtocolError(self._name, f"{what}: {exc}") from exc
        if response.isError():
            code = response.exception_code
            problem = f"{what}: exception code {code}"
            if code in _GATEWAY_CODES:
                raise DeviceUnavailable(self._name, problem)
            raise DeviceProtocolError(self._name, problem)
        return response


class ModbusTcpDevice(ModbusDevice):
    """A device behind its own TCP connection."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        unit_id: int,
        timeout_s: float,
        register_map: LoadedMap,
        *,
        release_limit_kw: float | None = None,
    ) -> None:
        client = AsyncModbusTcpClient(
            host, port=port, name=name, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        # One request at a time: the controller's and telemetry's calls must not interleave
        # a reconnect with a request on the same client.
        super().__init__(
            name,
            unit_id,
            timeout_s,
            register_map,
            client=client,
            lock=asyncio.Lock(),
            endpoint=f"{host}:{port}",
            release_limit_kw=release_limit_kw,
        )
        self.host = host
        self.port = port

    @classmethod
    def from_config(
        cls,
        device: DeviceBase,
        register_map: LoadedMap,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> ModbusTcpDevice:
        """The driver for a site-file device; host/port override the file (tests, sims)."""
        return cls(
            device.name,
            host or device.host,
            device.port if port is None else port,
            device.unit_id,
            device.timeout_s,
            register_map,
            release_limit_kw=release_limit_of(device),
        )


def release_limit_of(device: DeviceBase) -> float | None:
    """The limit that releases a site-file load (its rating); None for other kinds."""
    return device.max_kw if isinstance(device, FlexibleLoad) else None
