"""The one error hierarchy of flexedge.

Transport libraries raise their own exceptions (pymodbus, paho, sqlite3, pydantic); the edge
that calls them translates them into these, so callers handle one family.
"""

from __future__ import annotations

import sys


class FlexedgeError(Exception):
    """Base of every error flexedge raises on purpose."""


class ConfigError(FlexedgeError):
    """A site file or register map is wrong. The message names the file and the field."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class DeviceError(FlexedgeError):
    """A device could not be read or written."""

    def __init__(self, device: str, problem: str) -> None:
        self.device = device
        self.problem = problem
        super().__init__(f"device {device}: {problem}")


class DeviceUnavailable(DeviceError):
    """The device did not answer (connection refused, timeout, dropped)."""


class DeviceProtocolError(DeviceError):
    """The device answered with an error (Modbus exception) or a value that makes no sense."""


class WriteNotConfirmed(DeviceError):
    """The read-back after a write did not show the value written."""


class MessageRejected(FlexedgeError):
    """An inbound market message is invalid; `reason` goes into the rejection ack."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BrokerError(FlexedgeError):
    """The MQTT broker could not be reached or refused us."""


class BrokerUnavailable(BrokerError):
    """No Mosquitto binary to start, or it failed to start."""


# What the OS raises when a serial port refuses its line settings (e.g. parity on a pty):
# pyserial lets termios.error through, which is no OSError, so pymodbus does not catch it
# either. The RTU driver and the serial simulator both open ports and translate it.
if sys.platform == "win32":
    SERIAL_LINE_REFUSED: tuple[type[Exception], ...] = ()
else:
    import termios

    SERIAL_LINE_REFUSED = (termios.error,)
