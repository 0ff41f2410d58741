"""An in-memory device behind drivers.base.Device, for in-process tests of the shell.

It answers at once with the reading the test set, records every write, and follows its
setpoint the way a test asks it to (by default a write moves its power there, as a battery
that tracks its setpoint perfectly would). `unavailable` makes every request fail with
DeviceUnavailable; `ignore_writes` makes it answer but not take writes (its setpoint
register keeps the old value), as a device with frozen registers does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flexedge.drivers.base import Device, Reading
from flexedge.errors import DeviceUnavailable


@dataclass
class FakeDevice:
    """A device in memory. Set `p_kw`, `soc`, `available` to what the next reading shows."""

    device_name: str
    clock: Callable[[], float]
    p_kw: float = 0.0
    soc: float | None = None
    available: bool = True
    # Writes move `p_kw` to the setpoint (a released load: to `released_p_kw`).
    follows_setpoint: bool = True
    released_p_kw: float = 0.0
    has_heartbeat: bool = False
    unavailable: bool = False  # every request raises DeviceUnavailable
    ignore_writes: bool = False  # writes "succeed" but change nothing
    # Writes raise what a driver bug would let through (no DeviceError): a value its
    # register cannot hold, as struct.pack raises it.
    broken_writes: bool = False
    setpoint_kw: float | None = None
    heartbeat: int | None = None
    writes: list[float | None] = field(default_factory=list)
    heartbeats: list[int] = field(default_factory=list)
    leases: list[float] = field(default_factory=list)
    reads: int = 0
    refused: list[str] = field(default_factory=list)  # the requests made while unavailable
    connected: bool = False

    @property
    def name(self) -> str:
        return self.device_name

    def _answer(self, what: str) -> None:
        if self.unavailable:
            self.refused.append(what)
            raise DeviceUnavailable(self.device_name, f"{what}: no answer (fake)")

    async def connect(self) -> None:
        self._answer("connect")
        self.connected = True

    async def read(self) -> Reading:
        self._answer("read")
        self.reads += 1
        return Reading(
            asset=self.device_name,
            ts=self.clock(),
            p_kw=self.p_kw,
            soc=self.soc,
            available=self.available,
            setpoint_kw=self.setpoint_kw,
            heartbeat=self.heartbeat,
        )

    async def write_setpoint(self, p_kw: float | None) -> None:
        self._answer("write")
        if self.broken_writes:
            raise OverflowError(f"{p_kw} kW does not fit the register (fake)")
        self.writes.append(p_kw)
        if self.ignore_writes:
            return
        self.setpoint_kw = p_kw
        if self.follows_setpoint:
            self.p_kw = self.released_p_kw if p_kw is None else p_kw

    async def configure_lease(self, seconds: float) -> bool:
        self._answer("lease")
        self.leases.append(seconds)
        return True

    async def write_heartbeat(self, counter: int) -> bool:
        self._answer("heartbeat")
        if not self.has_heartbeat:
            return False
        self.heartbeats.append(counter)
        if not self.ignore_writes:
            self.heartbeat = counter % 65536
        return True

    async def close(self) -> None:
        self.connected = False


def _is_a_device(device: FakeDevice) -> Device:
    return device  # mypy checks here that FakeDevice implements the Device protocol
