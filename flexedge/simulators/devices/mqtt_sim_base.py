"""What every simulated MQTT JSON device shares, without I/O: its settings, its clock, its
faults and how they change what it publishes and takes (mqtt_devices does the I/O).

Faults (faults), as an MQTT device has them:

    drop           offline: publishes no state and loses every command
    latency_s      each state message and each command takes this long on its way
                   (applied by mqtt_devices)
    frozen         keeps publishing the state of the moment the fault started; commands still
                   reach the model, as the Modbus simulator's writes do
    ignore_writes  commands are dropped; the device still reports its (unchanged) state after
                   one, as a Modbus device still acknowledges the write
    exception      refused: a Modbus exception code has no MQTT meaning
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from flexedge.config.schema import MqttDeviceSettings
from flexedge.simulators.devices.device_models import SimModel
from flexedge.simulators.devices.faults import DeviceFaults, FaultState

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

NO_EXCEPTION = (
    "an MQTT device answers no requests, so it has no Modbus exception to answer "
    "with; use drop, latency_s, frozen or ignore_writes"
)


def put(state: dict[str, object], path: str, value: object) -> None:
    """Set a dotted field (e.g. ENERGY.Power) in a state message, making its parents."""
    *parents, leaf = path.split(".")
    node = state
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{path!r} runs through {key!r}, which holds a value")
        node = child
    node[leaf] = value


class SimulatedMqttDevice(ABC):
    """One device: state() is what it would publish now, handle_command() applies one
    command. The faults decide which of those the broker side gets (publishing,
    published_state(), receive())."""

    def __init__(self, name: str, settings: MqttDeviceSettings, clock: Clock) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self._t = clock()
        # True: publishes nothing, like a plug that lost its Wi-Fi (tests); the drop fault
        # also loses commands.
        self.silent = False
        self.faults = DeviceFaults(name, unsupported={"exception": NO_EXCEPTION})
        self.faults.add_listener(self._faults_changed)
        self._frozen: dict[str, object] | None = None

    @property
    @abstractmethod
    def model(self) -> SimModel:
        """The physics model: a LoadModel, BatteryModel or GeneratorModel."""

    @abstractmethod
    def state(self) -> dict[str, object]:
        """The state message as the device would publish it now (faults aside)."""

    @abstractmethod
    def handle_command(self, payload: bytes) -> bool:
        """Apply one command; False (and a log line) if it is malformed."""

    def _now(self) -> float:
        # The models refuse time going backwards; a clock stepping back (an injected one, or
        # time.time) just pauses them.
        self._t = max(self._t, self.clock())
        return self._t

    def _device_power(self, p_kw: float) -> float:
        """Site-convention kW as the device reports it: its sign and unit, rounded."""
        s = self.settings
        value = -p_kw if s.consumption_positive else p_kw
        if s.power_unit == "W":
            value *= 1000.0
        return round(value, 3) + 0.0  # + 0.0: no -0.0 in the JSON

    # -- faults -----------------------------------------------------------------------------
    @property
    def publishing(self) -> bool:
        return not (self.silent or self.faults.drop)

    def published_state(self) -> dict[str, object]:
        """What goes out now: the live state, or the snapshot while frozen."""
        return self._frozen if self._frozen is not None else self.state()

    def receive(self, payload: bytes) -> bool:
        """One command as the device takes it with its faults; True when it then reports its
        state (real devices do at once after a command)."""
        if self.faults.drop:
            logger.debug("%s: offline, command lost: %r", self.name, payload[:200])
            return False
        if self.faults.ignore_writes:
            logger.debug("%s: ignoring command (fault): %r", self.name, payload[:200])
            return True
        return self.handle_command(payload)

    def _faults_changed(self, before: FaultState, after: FaultState) -> None:
        if after.frozen and not before.frozen:
            # A snapshot, not a pause: the model keeps moving underneath.
            self._frozen = self.state()
        elif not after.frozen:
            self._frozen = None
