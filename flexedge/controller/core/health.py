"""Per-device health: when to try a device again, and whether it can be counted on.

A device that does not answer is retried with a growing back-off (one period, doubling up to
`max_backoff_s`), so a dead device costs one failed request per back-off, not one per tick.
A device that answers but does not follow its setpoint (the read-back after a write shows
another value: frozen registers, writes ignored) is not counted on either, after
`unconfirmed_limit` writes in a row. Both states clear by themselves on the next success.
"""

from __future__ import annotations

from dataclasses import dataclass

# A device whose last good reading is older than this many control periods is unavailable;
# metering counts nothing across a longer interval, and reports wait no longer than this
# past a window's end for its last sample.
STALE_PERIODS = 3


def stale_after_s(period_s: float) -> float:
    """How old data may be, in seconds, before it is stale (STALE_PERIODS periods)."""
    return STALE_PERIODS * period_s


def counted_on(
    available: bool, answered_at: float | None, following: bool, period_s: float, now: float
) -> bool:
    """Can dispatch count on a device: its last reading says it is available, that reading
    arrived within STALE_PERIODS periods of `now`, and it follows its setpoint."""
    return (
        available
        and answered_at is not None
        and following
        and now - answered_at <= stale_after_s(period_s)
    )


@dataclass(slots=True)
class DeviceHealth:
    period_s: float
    max_backoff_s: float = 30.0
    unconfirmed_limit: int = 3
    failures: int = 0
    next_attempt: float = 0.0
    unconfirmed_writes: int = 0
    # Every request without a usable answer since start (failures resets on success).
    failed_requests: int = 0

    def due(self, now: float) -> bool:
        return now >= self.next_attempt

    @property
    def answering(self) -> bool:
        return self.failures == 0

    @property
    def following(self) -> bool:
        return self.unconfirmed_writes < self.unconfirmed_limit

    def success(self) -> bool:
        """A request was answered. True when this ends an outage."""
        recovered = self.failures > 0
        self.failures = 0
        self.next_attempt = 0.0
        return recovered

    def failure(self, now: float) -> bool:
        """A request got no usable answer. True when this starts an outage."""
        self.failures += 1
        self.failed_requests += 1
        backoff = min(self.max_backoff_s, self.period_s * 2 ** (self.failures - 1))
        self.next_attempt = now + backoff
        return self.failures == 1

    def write_checked(self, confirmed: bool) -> bool:
        """The read-back after a write. True when this changes `following`."""
        before = self.following
        self.unconfirmed_writes = 0 if confirmed else self.unconfirmed_writes + 1
        return before != self.following


def setpoint_confirmed(written_kw: float, read_back_kw: float | None) -> bool:
    """Does the device's setpoint register show what we wrote (to register resolution)?

    Devices without a readable setpoint register cannot confirm; they are taken at their word.
    """
    if read_back_kw is None:
        return True
    return abs(written_kw - read_back_kw) <= 0.02 + 0.01 * abs(written_kw)
