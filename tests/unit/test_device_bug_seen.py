"""An exception a driver should have translated (not a DeviceError) does not vanish with the
background task it ran in: it is logged with its traceback and counts as a failed request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import Clock, control_event, shell


def test_an_unexpected_exception_in_a_device_write_is_logged_and_backs_the_device_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    with shell(tmp_path, clock, battery) as (control, _):

        async def scenario() -> None:
            await control.tick()
            control.add(control_event(0.01, T0 + 1, T0 + 11))
            battery.broken_writes = True
            clock.now = T0 + 1
            with caplog.at_level(logging.ERROR):
                await control.tick()

        run(scenario())
        health = control.health["b1"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "device b1: unexpected OverflowError in device I/O"
    assert record.exc_info is not None and record.exc_info[0] is OverflowError
    assert health.failures == 1  # backed off like any failed request
