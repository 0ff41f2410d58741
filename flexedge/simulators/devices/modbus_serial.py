"""Serve simulated devices over Modbus RTU on a serial port, like devices on one RS-485 bus.

The same SimulatedDevice.sim_device() objects as the TCP simulator, so both transports share
one register layout and one model action. One port serves every device of the bus, one
SimDevice per unit id.

The simulator opens `simulator.serial_port` of the site file, the controller `serial.port`:
the two ends of one line (a null-modem cable between two adapters, or a pty pair joined by a
relay such as tests/support/pty_pair.py or `socat -d -d pty,raw,echo=0 pty,raw,echo=0`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer

from flexedge.config.loader import Site
from flexedge.config.schema import SerialSettings
from flexedge.errors import SERIAL_LINE_REFUSED, ConfigError
from flexedge.simulators.devices.sim_device import SimulatedDevice

logger = logging.getLogger(__name__)


class ModbusSerialSimServer:
    """One serial port serving one or more simulated devices (one per unit id)."""

    def __init__(self, devices: Sequence[SimulatedDevice], settings: SerialSettings) -> None:
        ids = [d.unit_id for d in devices]
        if not devices or len(set(ids)) != len(ids):
            raise ValueError(f"need at least one device and distinct unit ids, got {ids}")
        self.devices = tuple(devices)
        self.settings = settings  # settings.port is the simulator's end of the line
        self._ids = frozenset(ids)
        self._server: ModbusSerialServer | None = None

    @property
    def host(self) -> str:
        """The serial port, so that SiteSimulator.address() gives (port path, 0)."""
        return self.settings.port

    @property
    def port(self) -> int:
        return 0

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Open the port and answer requests; OSError when it cannot be opened."""
        if self._server is not None:
            return
        line = self.settings
        server = ModbusSerialServer(
            [d.sim_device() for d in self.devices],
            framer=FramerType.RTU,
            port=line.port,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            trace_pdu=self._only_our_units,  # type: ignore[arg-type]  # None: see there
        )
        try:
            await server.serve_forever(background=True)
        # RuntimeError: pymodbus's "cannot open".
        except (RuntimeError, *SERIAL_LINE_REFUSED) as exc:
            raise OSError(f"cannot open serial port {line.port}: {exc}") from None
        self._server = server
        logger.debug("modbus RTU simulator on %s, units %s", line.port, sorted(self._ids))

    async def stop(self) -> None:
        """Close the port; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    def _only_our_units(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        # On a bus, a request for a unit nobody has gets no answer at all; pymodbus would send
        # an exception response instead. A received PDU traced to None is not handled.
        if not sending and pdu.dev_id not in self._ids:
            logger.debug(
                "%s: no unit %s on this bus, staying silent", self.settings.port, pdu.dev_id
            )
            return None
        return pdu


def serial_servers(
    site: Site,
    devices: Sequence[SimulatedDevice],
) -> list[ModbusSerialSimServer]:
    """Servers for the site's modbus-rtu devices: one per simulator.serial_port. A device
    without simulator.serial_port is not simulated (a real device may be on that line)."""
    buses: dict[str, list[SimulatedDevice]] = {}
    lines: dict[str, SerialSettings] = {}
    for served in devices:
        device = site.config.device(served.name)
        sim_port = device.simulator.serial_port
        if device.serial is None or sim_port is None:
            logger.warning("%s: not simulated: modbus-rtu needs simulator.serial_port", device.name)
            continue
        # The schema checks unit ids and settings per serial.port; one simulator end for two
        # controller ports would join two buses into one.
        line = lines.setdefault(sim_port, device.serial)
        if line.port != device.serial.port:
            index = site.config.devices.index(device)
            raise ConfigError(
                str(site.path),
                f"devices[{index}] ({device.name}).simulator.serial_port",
                f"{sim_port} already simulates serial port {line.port}",
            )
        buses.setdefault(sim_port, []).append(served)
    return [
        ModbusSerialSimServer(group, lines[sim_port].model_copy(update={"port": sim_port}))
        for sim_port, group in buses.items()
    ]
