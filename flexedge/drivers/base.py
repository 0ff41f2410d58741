"""The device interface every driver implements, in site units (kW, SoC as a fraction).

Vendor units, scale factors, register layouts and sign conventions end inside the driver:
nothing above this interface ever sees a raw register value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Reading:
    """One telemetry sample of one device.

    `p_kw` follows the site convention: > 0 injects into the site bus (discharge, generation),
    < 0 consumes (charge, load). `soc` is a fraction 0..1, or None for devices without storage.
    `ts` is UTC epoch seconds taken when the answer arrived.
    """

    asset: str
    ts: float
    p_kw: float
    soc: float | None
    available: bool
    setpoint_kw: float | None = None
    # The controller heartbeat as the device shows it (None: the device has no heartbeat).
    heartbeat: int | None = None


class Device(Protocol):
    """What the controller needs from any device, whatever the transport."""

    @property
    def name(self) -> str: ...

    async def connect(self) -> None:
        """Open the transport. Raises DeviceUnavailable when the device cannot be reached."""

    async def read(self) -> Reading:
        """Read power, SoC and availability. Raises DeviceError subclasses on failure."""

    async def write_setpoint(self, p_kw: float | None) -> None:
        """Command the device in kW, site sign convention.

        Batteries and generators: the active power setpoint (always a number).
        Flexible loads: a consumption cap of -p_kw (so p_kw <= 0); a relay load sheds its
        curtailable part for any cap; a load with a consumption setpoint draws -p_kw, less or
        more than its demand. None releases a load: no cap, relay on, its own demand.
        """

    async def configure_lease(self, seconds: float) -> bool:
        """Set the device's own setpoint timeout; False when the device has none."""

    async def write_heartbeat(self, counter: int) -> bool:
        """Write the controller heartbeat; False when the device has none. A device that
        stops seeing it changing falls back on its own; read-back shows it is listening."""

    async def close(self) -> None:
        """Release the transport; safe to call twice."""
