"""Faults of one simulated device, switchable while the simulator runs.

A DeviceFaults holds the faults of one device and tells its listeners after every accepted
change; the Modbus simulator (modbus_server) and the MQTT JSON device simulator
(mqtt_devices, which says what each fault means there) apply them, and MQTT
control (fault_mqtt) and the `flexedge fault` command (fault_client)
change them:

    drop           close every client connection of the device's server, and every new one
    latency_s      added delay before answering each request
    exception      answer every request with this Modbus exception (ExcCodes name)
    frozen         reads return the values of the moment the fault started; physics goes on
    ignore_writes  writes are acknowledged but neither stored nor passed to the model

Every change goes through `updated()`, so a message is validated as a whole and either
applies completely or changes nothing. Change faults only on the simulator's event loop:
listeners close transports.

Usage::

    faults = sim.faults("battery-1")
    faults.latency_s = 0.5
    faults.apply({"exception": "DEVICE_FAILURE", "frozen": True})
    faults.clear()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pymodbus.constants import ExcCodes

logger = logging.getLogger(__name__)

TOPIC_ROOT = "flexedge-sim"
MAX_LATENCY_S = 3600.0  # beyond this asyncio.sleep can overflow, and no test needs more

# Names from the Modbus specification that pymodbus spells differently.
_ALIASES = {
    "SLAVE_DEVICE_BUSY": ExcCodes.DEVICE_BUSY,
    "SLAVE_DEVICE_FAILURE": ExcCodes.DEVICE_FAILURE,
    "ILLEGAL_DATA_ADDRESS": ExcCodes.ILLEGAL_ADDRESS,
    "ILLEGAL_DATA_VALUE": ExcCodes.ILLEGAL_VALUE,
    "GATEWAY_PATH_UNAVAILABLE": ExcCodes.GATEWAY_PATH_UNAVIABLE,
    "GATEWAY_TARGET_DEVICE_FAILED_TO_RESPOND": ExcCodes.GATEWAY_NO_RESPONSE,
}
_FLAGS = ("drop", "frozen", "ignore_writes")
KEYS = frozenset({*_FLAGS, "latency_s", "exception", "clear"})


class FaultError(ValueError):
    """A fault message or value that cannot be applied; nothing was changed."""


def command_topic(site: str, device: str) -> str:
    """Where fault messages for one device are published."""
    return f"{TOPIC_ROOT}/{site}/fault/{device}"


def state_topic(site: str, device: str) -> str:
    """Where the simulator publishes a device's current faults, retained."""
    return f"{TOPIC_ROOT}/{site}/fault-state/{device}"


def exception_code(name: object) -> ExcCodes | None:
    """The ExcCodes member for a name such as "DEVICE_FAILURE" (any case; the spec's
    SLAVE_DEVICE_BUSY style is accepted too); None for None or "none"."""
    if name is None or isinstance(name, ExcCodes):
        return name
    if not isinstance(name, str):
        raise FaultError(f"exception must be a code name or null, got {name!r}")
    key = name.strip().upper()
    if key == "NONE":
        return None
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        return ExcCodes[key]
    except KeyError:
        known = ", ".join(code.name for code in ExcCodes)
        raise FaultError(f"unknown exception code {name!r}; known: {known}") from None


@dataclass(frozen=True, slots=True)
class FaultState:
    """The faults of one device at one moment; the default is a healthy device."""

    drop: bool = False
    latency_s: float = 0.0
    exception: ExcCodes | None = None
    frozen: bool = False
    ignore_writes: bool = False

    @property
    def active(self) -> bool:
        return self != FaultState()

    def to_json(self) -> dict[str, object]:
        """The payload of the fault-state topic."""
        return {
            "drop": self.drop,
            "latency_s": self.latency_s,
            "exception": None if self.exception is None else self.exception.name,
            "frozen": self.frozen,
            "ignore_writes": self.ignore_writes,
        }

    def describe(self) -> str:
        """One line for people, e.g. "drop, latency 0.5 s"."""
        parts = [flag for flag in _FLAGS if getattr(self, flag)]
        if self.latency_s:
            parts.append(f"latency {self.latency_s:g} s")
        if self.exception is not None:
            parts.append(f"exception {self.exception.name}")
        return ", ".join(parts) or "no faults"


def updated(state: FaultState, message: Mapping[str, object]) -> FaultState:
    """`state` changed by one fault message, e.g. {"clear": true, "latency_s": 0.5}.
    "clear" resets every fault first; the other keys then apply. Raises FaultError naming
    the first bad key or value."""
    unknown = sorted(set(message) - KEYS)
    if unknown:
        raise FaultError(f"unknown key(s) {unknown}; known: {sorted(KEYS)}")
    for key in (*_FLAGS, "clear"):
        if key in message and not isinstance(message[key], bool):
            raise FaultError(f"{key} must be true or false, got {message[key]!r}")
    changes: dict[str, object] = {key: message[key] for key in _FLAGS if key in message}
    if "latency_s" in message:
        changes["latency_s"] = _latency(message["latency_s"])
    if "exception" in message:
        changes["exception"] = exception_code(message["exception"])
    base = FaultState() if message.get("clear") is True else state
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _latency(value: object) -> float:
    # bool is an int subclass: `true` is a mistake here, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"latency_s must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= MAX_LATENCY_S):
        raise FaultError(f"latency_s must be in [0, {MAX_LATENCY_S:g}], got {value!r}")
    return float(value)


# Called with (before, after) after every accepted change, also one that changed nothing.
Listener = Callable[[FaultState, FaultState], None]


class DeviceFaults:
    """The current faults of one device, with a setter per fault. `unsupported` maps a fault
    this device cannot have (an MQTT device has no Modbus exceptions) to why: a message that
    would switch it on is refused with that reason; switching it off is accepted."""

    def __init__(self, device: str, *, unsupported: Mapping[str, str] | None = None) -> None:
        self.device = device
        self._state = FaultState()
        self._listeners: list[Listener] = []
        self._unsupported = dict(unsupported or {})
        unknown = sorted(set(self._unsupported) - KEYS)
        if unknown:
            raise ValueError(f"unsupported names unknown faults {unknown}")

    @property
    def state(self) -> FaultState:
        return self._state

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def apply(self, message: Mapping[str, object]) -> FaultState:
        """Apply a whole fault message (see `updated`) or, on FaultError, nothing."""
        before = self._state
        after = updated(before, message)
        healthy = FaultState()
        for fault, why in self._unsupported.items():
            if getattr(after, fault) != getattr(healthy, fault):
                raise FaultError(f"{self.device}: no {fault} fault: {why}")
        self._state = after
        if self._state != before:
            logger.info("%s: faults now %s", self.device, self._state.describe())
        for listener in list(self._listeners):
            listener(before, self._state)
        return self._state

    def clear(self) -> None:
        self.apply({"clear": True})

    @property
    def drop(self) -> bool:
        return self._state.drop

    @drop.setter
    def drop(self, on: bool) -> None:
        self.apply({"drop": on})

    @property
    def latency_s(self) -> float:
        return self._state.latency_s

    @latency_s.setter
    def latency_s(self, seconds: float) -> None:
        self.apply({"latency_s": seconds})

    @property
    def exception(self) -> ExcCodes | None:
        return self._state.exception

    @exception.setter
    def exception(self, code: ExcCodes | None) -> None:
        self.apply({"exception": code})

    @property
    def frozen(self) -> bool:
        return self._state.frozen

    @frozen.setter
    def frozen(self, on: bool) -> None:
        self.apply({"frozen": on})

    @property
    def ignore_writes(self) -> bool:
        return self._state.ignore_writes

    @ignore_writes.setter
    def ignore_writes(self, on: bool) -> None:
        self.apply({"ignore_writes": on})

    async def before_answer(self) -> ExcCodes | None:
        """Run at the start of every request: wait out the latency, then the exception to
        answer with, if any. Read after the sleep, so a fault cleared meanwhile is gone."""
        if self._state.latency_s > 0:
            await asyncio.sleep(self._state.latency_s)
        if self._state.drop:
            # The server closed this request's connection already; nobody gets the answer.
            return ExcCodes.GATEWAY_NO_RESPONSE
        return self._state.exception
