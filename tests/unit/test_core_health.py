"""Device health on plain values: back-off, recovery, and devices that stop following."""

from __future__ import annotations

from flexedge.controller.core.health import DeviceHealth, setpoint_confirmed


def test_backoff_grows_to_its_cap_and_clears_on_success() -> None:
    health = DeviceHealth(period_s=1.0, max_backoff_s=8.0)
    assert health.failure(now=100.0) is True  # the outage starts
    assert not health.due(100.5) and health.due(101.0)
    waits = []
    for _ in range(5):
        health.failure(now=200.0)
        waits.append(health.next_attempt - 200.0)
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert not health.answering
    assert health.success() is True  # the outage ends
    assert health.answering and health.due(0.0)
    assert health.success() is False


def test_device_that_ignores_writes_stops_being_counted_on_and_comes_back() -> None:
    health = DeviceHealth(period_s=1.0, unconfirmed_limit=3)
    assert health.write_checked(False) is False
    assert health.write_checked(False) is False
    assert health.write_checked(False) is True
    assert not health.following
    assert health.write_checked(True) is True
    assert health.following


def test_setpoint_confirmation_allows_register_resolution_only() -> None:
    assert setpoint_confirmed(2.5, 2.5)
    assert setpoint_confirmed(2.504, 2.5)
    assert not setpoint_confirmed(2.5, 0.0)
    assert not setpoint_confirmed(-3.0, -2.5)
    assert setpoint_confirmed(1.0, None)
