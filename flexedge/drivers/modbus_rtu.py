"""A device (battery, flexible load, generator) over Modbus RTU on a serial line (RS-485 /
RS-232), in site units.

Several devices on one RS-485 bus share one serial port. A port can be opened once (pyserial
opens it exclusively) and a half-duplex bus carries one frame at a time, so every device on a
port shares one SerialBus: one pymodbus client and one lock. A device holds the lock for a
whole read plan or write, so two devices never interleave their frames; the bus closes when
its last device closes.

Failure handling is ModbusDevice's: a request without an answer (a unit id nobody answers to)
is DeviceUnavailable after the device's timeout_s, and the port is closed and reopened on the
next request, which also discards a late answer that would otherwise be read as the next one.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from flexedge.config.registermap import LoadedMap
from flexedge.config.schema import DeviceBase, SerialSettings
from flexedge.drivers.modbus_tcp import ModbusDevice, release_limit_of
from flexedge.errors import SERIAL_LINE_REFUSED, ConfigError, DeviceUnavailable

logger = logging.getLogger(__name__)

# The client's own answer timeout. Devices on one bus may have different timeout_s, which
# ModbusDevice enforces per request; this is only the ceiling (the schema's maximum).
_CLIENT_TIMEOUT_S = 30.0


@dataclass(eq=False)
class SerialBus:
    """One open (or openable) serial port and the devices that use it."""

    settings: SerialSettings
    client: AsyncModbusSerialClient
    lock: asyncio.Lock
    loop: asyncio.AbstractEventLoop
    users: int = 0


# By port path. Clients belong to the event loop that made them, so a bus left over from
# another loop (a device never closed) is replaced rather than shared.
_BUSES: dict[str, SerialBus] = {}


def join_bus(settings: SerialSettings) -> SerialBus:
    """The bus of `settings.port`, created on first use. ConfigError if another device
    already uses the port with different line settings: one port has one speed and format."""
    loop = asyncio.get_running_loop()
    bus = _BUSES.get(settings.port)
    if bus is not None and bus.loop is loop:
        if bus.settings != settings:
            raise ConfigError(
                settings.port,
                "serial",
                f"line settings {_describe(settings)} differ from "
                f"{_describe(bus.settings)} of a device already on this port",
            )
    else:
        client = AsyncModbusSerialClient(
            settings.port,
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=settings.parity,
            stopbits=settings.stopbits,
            name=settings.port,
            timeout=_CLIENT_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
        )
        bus = _BUSES[settings.port] = SerialBus(settings, client, asyncio.Lock(), loop)
    bus.users += 1
    return bus


def leave_bus(bus: SerialBus) -> None:
    """One device fewer on `bus`; the last one closes the port."""
    bus.users -= 1
    if bus.users > 0:
        return
    bus.client.close()
    if _BUSES.get(bus.settings.port) is bus:
        del _BUSES[bus.settings.port]
    logger.debug("serial bus %s closed", bus.settings.port)


def _describe(settings: SerialSettings) -> str:
    return f"{settings.baudrate} {settings.bytesize}{settings.parity}{settings.stopbits}"


class ModbusRtuDevice(ModbusDevice):
    """A device at `unit_id` on the serial bus `serial.port`. Needs a running event loop."""

    def __init__(
        self,
        name: str,
        serial: SerialSettings,
        unit_id: int,
        timeout_s: float,
        register_map: LoadedMap,
        *,
        release_limit_kw: float | None = None,
    ) -> None:
        bus = join_bus(serial)
        super().__init__(
            name,
            unit_id,
            timeout_s,
            register_map,
            client=bus.client,
            lock=bus.lock,
            endpoint=f"{serial.port} unit {unit_id}",
            release_limit_kw=release_limit_kw,
        )
        self.serial = serial
        self.bus = bus
        self._joined = True

    @classmethod
    def from_config(
        cls, device: DeviceBase, register_map: LoadedMap, *, port: str | None = None
    ) -> ModbusRtuDevice:
        """The driver for a site-file device; `port` overrides serial.port (tests, sims)."""
        if device.serial is None:  # the schema requires it for modbus-rtu
            raise ValueError(f"device {device.name} has no serial section")
        serial = device.serial if port is None else device.serial.model_copy(update={"port": port})
        return cls(
            device.name,
            serial,
            device.unit_id,
            device.timeout_s,
            register_map,
            release_limit_kw=release_limit_of(device),
        )

    async def _ensure_connected(self) -> None:
        try:
            await super()._ensure_connected()
        except SERIAL_LINE_REFUSED as exc:
            raise DeviceUnavailable(
                self.name, f"cannot open {self.serial.port} with {_describe(self.serial)}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Leave the bus (closing the port if this was its last device); safe to call twice."""
        if self._joined:
            self._joined = False
            async with self._lock:  # not while another device's request is on the line
                leave_bus(self.bus)
