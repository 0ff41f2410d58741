"""The simulators' two times: durations and the time of day.

Every simulator (Modbus TCP, RTU, MQTT) moves its models on one clock, by default
time.monotonic, so that a wall-clock step (NTP, an operator) never stretches or reverses a
ramp, a lease or a rebound. A load's declared profile is by second of day UTC, as the
controller reads it, so the load models look it up on UTC wall time: the clock's reading plus
the offset from utc_offset_s().
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


def utc_offset_s(clock: Clock) -> float:
    """What to add to `clock`'s readings for UTC wall time (seconds since the epoch).

    The monotonic clock counts from an arbitrary start (the machine's uptime): it is pinned to
    the wall clock once, here. Any other clock (time.time, a test's injected clock) already
    reads the time the profile is declared in."""
    if clock is time.monotonic:
        return time.time() - time.monotonic()
    return 0.0
