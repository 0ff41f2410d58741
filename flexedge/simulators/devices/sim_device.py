"""One simulated device of any kind as a pymodbus SimDevice: the register action shared by
the TCP (modbus_server) and RTU (modbus_serial) simulators.

On every request the action advances the device's model (behind its device_models
adapter) to the clock, refreshes the live registers from it with flexedge.config.registermap.encode,
decodes writes into point values and hands them to the adapter, and applies the device's
faults (faults): latency, refusals, ignored writes, frozen registers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from flexedge.config.registermap import DataType as RegisterType
from flexedge.config.registermap import LoadedMap, Point, decode, encode
from flexedge.errors import ConfigError
from flexedge.simulators.devices.battery import BatteryModel
from flexedge.simulators.devices.device_models import AnyAdapter, SimModel, wrap
from flexedge.simulators.devices.faults import DeviceFaults, FaultState

logger = logging.getLogger(__name__)

# (device name, point name, value in site units, time.perf_counter() at arrival)
OnWrite = Callable[[str, str, float, float], None]
Clock = Callable[[], float]

_HOLDING_FCS = frozenset({3, 6, 16, 22, 23})
_INPUT_FCS = frozenset({4})
_SF_EXPONENTS = range(-6, 7)
# The registers of each integer type's lowest and highest raw value, big-endian word order.
_EXTREMES: dict[RegisterType, tuple[list[int], list[int]]] = {
    RegisterType.U16: ([0x0000], [0xFFFF]),
    RegisterType.S16: ([0x8000], [0x7FFF]),
    RegisterType.U32: ([0x0000, 0x0000], [0xFFFF, 0xFFFF]),
    RegisterType.S32: ([0x8000, 0x0000], [0x7FFF, 0xFFFF]),
}


def encode_saturating(
    point: Point, value: float, sf_exponent: int = 0, base: float = 1.0
) -> list[int]:
    """encode(), but a value beyond the point's range gives the nearest end of it, as a real
    meter's register saturates. Ratings are checked at startup; what can still overflow is
    physics beyond them (a noisy or rebounding load above its rating), which must not turn
    every read of the device into an error."""
    try:
        return encode(point, value, sf_exponent, base)
    except ValueError:
        if point.type not in _EXTREMES:
            raise
        ends = [
            words if point.word_order == "big" else words[::-1] for words in _EXTREMES[point.type]
        ]
        # Nearest in site units: sign and scale decide which raw end that is.
        return min(ends, key=lambda regs: abs(decode(point, regs, sf_exponent, base) - value))


class SimulatedDevice:
    """One device behind one unit id: its model (through its kind's adapter), its map and the
    register action. A bare BatteryModel is accepted too, as SimulatedBattery always did."""

    def __init__(
        self,
        name: str,
        model: BatteryModel | AnyAdapter,
        register_map: LoadedMap,
        *,
        unit_id: int = 1,
        clock: Clock = time.monotonic,
        on_write: OnWrite | None = None,
    ) -> None:
        self.name = name
        self.adapter = wrap(model)
        self.register_map = register_map
        self.unit_id = unit_id
        self.on_write = on_write
        self._clock = clock
        self.faults = DeviceFaults(name)
        self.faults.add_listener(self._faults_changed)
        # While frozen: the value of every model-owned point when the fault started.
        self._frozen: dict[str, float] | None = None
        self._readers: dict[str, Callable[[], float]] = self.adapter.readers()
        points = register_map.spec.points
        # write_with partners (SunSpec 124 InWRte) show their leader's value; the model is
        # steered by the leader alone, so a write to a partner by itself changes nothing.
        self._leaders = {partner: n for n, p in points.items() for partner in p.write_with}
        for partner, leader in self._leaders.items():
            if leader in self._readers:
                self._readers[partner] = self._readers[leader]
        for point_name, point in points.items():
            if point.scale_point is not None and point.scale_point not in self._readers:
                raise ConfigError(
                    register_map.source,
                    f"points.{point_name}.scale_point",
                    f"the simulator has no value for {point.scale_point!r}",
                )
        self._sf_points = {p.scale_factor_point for p in points.values() if p.scale_factor_point}
        self._sf = {name: self._choose_exponent(name) for name in sorted(self._sf_points)}
        for sf_name, exponent in self._sf.items():
            self._readers[sf_name] = partial(float, exponent)
        for point_name, point in points.items():
            if point.scale_factor_point is None:
                self._check_fits(point_name, point, 0)

    @property
    def model(self) -> SimModel:
        """The physics model: a BatteryModel, LoadModel or GeneratorModel."""
        return self.adapter.model

    # -- layout --------------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """A fresh SimDevice; registers are refreshed from the model on every request."""
        tables: dict[str, list[SimData]] = {"holding": [], "input": []}
        for name, point in self.register_map.spec.points.items():
            readonly = point.access != "rw" or name in self._sf_points
            tables[point.table].append(
                SimData(
                    address=point.address,
                    count=point.width,
                    values=0,
                    datatype=DataType.REGISTERS,
                    readonly=readonly,
                )
            )
        # Constants and unimplemented runs (SunSpec marker, model headers, padding): fixed.
        for block in self.register_map.spec.fixed_blocks():
            tables[block.table].append(
                SimData(
                    address=block.address,
                    values=block.registers(),
                    datatype=DataType.REGISTERS,
                    readonly=True,
                )
            )
        # SimDevice needs at least one entry per block; these answer ILLEGAL_ADDRESS.
        for entries in tables.values():
            if not entries:
                entries.append(SimData(address=0, datatype=DataType.INVALID))
        bits = [SimData(address=0, values=False, datatype=DataType.BITS, readonly=True)]
        return SimDevice(
            id=self.unit_id,
            simdata=(bits, list(bits), tables["holding"], tables["input"]),
            action=self._action,
        )

    def _points_in(self, table: str, first: int, count: int) -> list[tuple[str, Point]]:
        return [
            (name, p)
            for name, p in self.register_map.spec.points.items()
            if p.table == table and p.address < first + count and first < p.address + p.width
        ]

    def _sf_of(self, point: Point) -> int:
        return 0 if point.scale_factor_point is None else self._sf[point.scale_factor_point]

    def _base_of(self, point: Point) -> float:
        """The site value a percentage point is a share of (1 for other points)."""
        return 1.0 if point.scale_point is None else self._readers[point.scale_point]()

    def _limits(self, name: str) -> list[float]:
        """Values this device will put in a point, to check at startup that they fit."""
        return self.adapter.limits(self._leaders.get(name, name))

    def _fits(self, point: Point, name: str, exponent: int) -> bool:
        try:
            for value in self._limits(name):
                encode(point, value, exponent, self._base_of(point))
        except ValueError:
            return False
        return True

    def _check_fits(self, name: str, point: Point, exponent: int) -> None:
        if not self._fits(point, name, exponent):
            raise ConfigError(
                self.register_map.source,
                f"points.{name}",
                f"cannot hold {self._limits(name)} for device {self.name}",
            )

    def _choose_exponent(self, sf_name: str) -> int:
        """The finest SunSpec exponent at which every dependent point holds its range."""
        dependents = [
            (n, p)
            for n, p in self.register_map.spec.points.items()
            if p.scale_factor_point == sf_name
        ]
        for exponent in _SF_EXPONENTS:
            if all(self._fits(p, n, exponent) for n, p in dependents):
                return exponent
        raise ConfigError(
            self.register_map.source,
            f"points.{sf_name}",
            f"no exponent in {_SF_EXPONENTS} fits the ranges of device {self.name}",
        )

    # -- runtime -------------------------------------------------------------------------

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
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
        now = self._clock()
        self.adapter.advance(now)
        if set_values is not None and table == "holding":
            written = self._decode_write(
                start_address, address, registers, cast(list[int], set_values)
            )
            if written is None:
                return ExcCodes.ILLEGAL_VALUE
            if self.faults.ignore_writes:
                logger.debug("%s: ignoring write %s (fault)", self.name, written)
            else:
                self._apply(written, now, arrived)
        self._refresh(table, start_address, registers)
        if set_values and (self.faults.ignore_writes or self.faults.frozen):
            # pymodbus copies set_values into the block after we return: turn that copy into
            # a no-op so the registers keep their (old or frozen) values.
            offset = address - start_address
            cast(list[int], set_values)[:] = registers[offset : offset + len(set_values)]
        return None

    def _decode_write(
        self, start: int, address: int, registers: list[int], values: list[int]
    ) -> list[tuple[str, float]] | None:
        """Values of every point the write touches, read from the block as it will be."""
        image = list(registers)
        offset = address - start
        image[offset : offset + len(values)] = values
        written: list[tuple[str, float]] = []
        for name, point in self._points_in("holding", address, len(values)):
            begin = point.address - start
            value = decode(
                point, image[begin : begin + point.width], self._sf_of(point), self._base_of(point)
            )
            if not self.adapter.accepts(name, value):
                logger.info("%s: rejected write of %s to %s", self.name, value, name)
                return None
            written.append((name, value))
        return written

    def _apply(self, written: Iterable[tuple[str, float]], now: float, arrived: float) -> None:
        for name, value in written:
            # write_with partners are not the adapter's points: their leader steers the model.
            self.adapter.apply(name, value, now)
            if self.on_write is not None:
                self.on_write(self.name, name, value, arrived)

    def _refresh(self, table: str, start: int, registers: list[int]) -> None:
        for name, point in self.register_map.spec.points.items():
            reader = self._readers.get(name)
            if point.table != table or reader is None:
                continue  # points the model does not own keep what was written
            value = reader() if self._frozen is None else self._frozen.get(name, reader())
            begin = point.address - start
            registers[begin : begin + point.width] = encode_saturating(
                point, value, self._sf_of(point), self._base_of(point)
            )

    def _faults_changed(self, before: FaultState, after: FaultState) -> None:
        if after.frozen and not before.frozen:
            # Snapshot the values rather than skip refreshes: registers never read before
            # the fault would otherwise show zeros instead of the state at its start.
            self.adapter.advance(self._clock())
            self._frozen = {name: reader() for name, reader in self._readers.items()}
        elif not after.frozen:
            self._frozen = None


# The name from when batteries were the only kind; kept for existing users.
SimulatedBattery = SimulatedDevice
