"""A battery over Modbus TCP (pymodbus AsyncModbusTcpClient), in site units.

Timing is kept predictable for the controller: one attempt per request (retries=0) bounded by
the device's timeout_s, no background reconnect task; a call made while disconnected tries one
connect first. Every pymodbus/OS failure is translated here into DeviceUnavailable (no answer)
or DeviceProtocolError (an answer that is an error), so nothing above sees pymodbus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from config.schema import Battery
from controller.errors import (
    ConfigError,
    DeviceProtocolError,
    DeviceUnavailable,
)
from drivers.base import Reading
from drivers.registermap import LoadedMap, RegisterMap, decode, encode

logger = logging.getLogger(__name__)

MAX_READ_COUNT = 125  # Modbus limit for FC3/FC4
# Exception codes by which a gateway says the device behind it did not answer.
_GATEWAY_CODES = frozenset({ExcCodes.GATEWAY_PATH_UNAVIABLE, ExcCodes.GATEWAY_NO_RESPONSE})


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers of `table` from `address`, covering `points`."""

    table: Literal["holding", "input"]
    address: int
    count: int
    points: tuple[str, ...]


def plan_reads(spec: RegisterMap, names: Iterable[str] | None = None,
               max_count: int = MAX_READ_COUNT) -> tuple[ReadBlock, ...]:
    """Fewest requests that read `names` (default: all points): points of one table that are
    back to back share a request. Gaps are never bridged, since devices (and the simulator)
    may answer ILLEGAL_ADDRESS for registers no point covers."""
    wanted = sorted(spec.points if names is None else set(names),
                    key=lambda n: (spec.points[n].table, spec.points[n].address))
    blocks: list[ReadBlock] = []
    for name in wanted:
        point = spec.points[name]
        last = blocks[-1] if blocks else None
        if (last is not None and last.table == point.table
                and last.address + last.count == point.address
                and last.count + point.width <= max_count):
            blocks[-1] = ReadBlock(last.table, last.address, last.count + point.width,
                                   (*last.points, name))
        else:
            blocks.append(ReadBlock(point.table, point.address, point.width, (name,)))
    return tuple(blocks)


class ModbusTcpDevice:
    """drivers.base.Device for a battery whose registers a LoadedMap describes."""

    def __init__(self, name: str, host: str, port: int, unit_id: int, timeout_s: float,
                 register_map: LoadedMap) -> None:
        self._name = name
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = timeout_s
        self.register_map = register_map
        for written in ("power_setpoint", "setpoint_timeout"):
            if register_map.has(written) and register_map.point(written).table != "holding":
                raise ConfigError(register_map.source, f"points.{written}.table",
                                  "must be holding: input registers cannot be written")
        self.read_plan = plan_reads(register_map.spec)
        self._client = AsyncModbusTcpClient(host, port=port, name=name, timeout=timeout_s,
                                            retries=0, reconnect_delay=0)
        # One request at a time: the controller's and telemetry's calls must not interleave
        # a reconnect with a request on the same client.
        self._lock = asyncio.Lock()
        self._sf: dict[str, int] = {}  # last-read SunSpec exponents by sf point name

    @classmethod
    def from_config(cls, device: Battery, register_map: LoadedMap, *, host: str | None = None,
                    port: int | None = None) -> ModbusTcpDevice:
        """The driver for a site-file battery; host/port override the file (tests, sims)."""
        return cls(device.name, host or device.host, device.port if port is None else port,
                   device.unit_id, device.timeout_s, register_map)

    @property
    def name(self) -> str:
        return self._name

    # -- Device --------------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._lock:
            await self._ensure_connected()

    async def read(self) -> Reading:
        values = await self.read_points()
        return Reading(asset=self._name, ts=time.time(), p_kw=values["power"],
                       soc=values["soc"], available=True,
                       setpoint_kw=values.get("power_setpoint"))

    async def write_setpoint(self, p_kw: float) -> None:
        """Write power_setpoint. ValueError if p_kw does not fit the register (NaN, or beyond
        what the map's type and scale hold): the controller clips to ratings before this."""
        await self._write_point("power_setpoint", p_kw)

    async def configure_lease(self, seconds: float) -> bool:
        """Set the device-side setpoint timeout; False when the map has no such point."""
        if not self.register_map.has("setpoint_timeout"):
            return False
        await self._write_point("setpoint_timeout", seconds)
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
                    raw[name] = registers[begin:begin + point.width]
        points = self.register_map.spec.points
        # Scale-factor points first: they are the exponents of the others.
        self._sf = {name: round(decode(points[name], raw[name]))
                    for name in {p.scale_factor_point for p in points.values()} if name}
        return {name: decode(points[name], regs, self._exponent(name))
                for name, regs in raw.items()}

    async def _write_point(self, name: str, value: float) -> None:
        point = self.register_map.point(name)
        async with self._lock:
            sf_name = point.scale_factor_point
            if sf_name is not None and sf_name not in self._sf:
                block = plan_reads(self.register_map.spec, [sf_name])[0]
                sf_point = self.register_map.point(sf_name)
                self._sf[sf_name] = round(decode(sf_point, await self._read_block(block)))
            registers = encode(point, value, self._exponent(name))
            logger.debug("%s: write %s = %s -> %s", self._name, name, value, registers)
            if point.width == 1:
                await self._request(f"write {name}", lambda: self._client.write_register(
                    point.address, registers[0], device_id=self.unit_id))
            else:
                await self._request(f"write {name}", lambda: self._client.write_registers(
                    point.address, registers, device_id=self.unit_id))

    def _exponent(self, name: str) -> int:
        sf_name = self.register_map.point(name).scale_factor_point
        return 0 if sf_name is None else self._sf[sf_name]

    async def _read_block(self, block: ReadBlock) -> list[int]:
        read = (self._client.read_holding_registers if block.table == "holding"
                else self._client.read_input_registers)
        response = await self._request(
            f"read {block.table} {block.address}+{block.count}",
            lambda: read(block.address, count=block.count, device_id=self.unit_id))
        registers = list(response.registers)
        if len(registers) != block.count:
            raise DeviceProtocolError(self._name, f"asked {block.count} registers at "
                                      f"{block.table} {block.address}, got {len(registers)}")
        return registers

    # -- transport -----------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        try:
            connected = await self._client.connect()
        except (ModbusException, OSError) as exc:  # pymodbus returns False for most causes
            raise DeviceUnavailable(self._name, f"cannot connect to {self.host}:{self.port}: "
                                    f"{exc}") from exc
        if not connected:
            raise DeviceUnavailable(self._name, f"cannot connect to {self.host}:{self.port}")
        logger.info("%s: connected to %s:%s", self._name, self.host, self.port)

    async def _request(self, what: str,
                       send: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        """One request, with every failure mapped to the flexedge error family."""
        await self._ensure_connected()
        try:
            response = await send()
        except (ConnectionException, ModbusIOException, OSError, TimeoutError) as exc:
            # No (usable) answer. Drop the connection so a late reply cannot be taken for
            # the answer to the next request; the next call reconnects.
            self._client.close()
            logger.warning("%s: %s failed: %s", self._name, what, exc)
            raise DeviceUnavailable(self._name, f"{what}: {exc}") from exc
        except ModbusException as exc:
            raise DeviceProtocolError(self._name, f"{what}: {exc}") from exc
        if response.isError():
            code = response.exception_code
            problem = f"{what}: exception code {code}"
            if code in _GATEWAY_CODES:
                raise DeviceUnavailable(self._name, problem)
            raise DeviceProtocolError(self._name, problem)
        return response
