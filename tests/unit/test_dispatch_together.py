"""Commitments that arrive together are planned together: however many are admitted before the
loop gets to their dispatch, and whatever their directions, the battery is written once, with
their net, and never beyond it (the transient of writing the first alone is gone)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.model import Commitment, RefType
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.support.properties import examples
from tests.unit.test_shell_in_process import MAX_KW, Clock, shell

WINDOW_S = 10.0
energies = st.floats(min_value=-0.02, max_value=0.02).filter(lambda kwh: abs(kwh) > 1e-4)


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(energies, min_size=2, max_size=6))
def test_commitments_arriving_together_are_written_once_as_their_net(kwhs: list[float]) -> None:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    with tempfile.TemporaryDirectory() as tmp, shell(Path(tmp), clock, battery) as (control, _):

        async def scenario() -> list[float | None]:
            await control.tick()
            before = len(battery.writes)
            clock.now = T0 + 1
            for i, kwh in enumerate(kwhs):
                commitment = Commitment(
                    f"c{i}",
                    f"c{i}",
                    RefType.BALANCING_CONTROL,
                    T0 + 1,
                    T0 + 1 + WINDOW_S,
                    kwh,
                    kwh,
                    (("b1", 1.0),),
                )
                control.add(commitment)
                control.dispatch_soon(commitment)
            await control.dispatched()
            return battery.writes[before:]

        writes = run(scenario())
    net_kw = sum(kwhs) / (WINDOW_S / 3600)
    [written] = writes  # one write for all of them
    assert written is not None
    assert abs(written) <= min(abs(net_kw), MAX_KW) + 1e-9
    assert written == pytest.approx(max(-MAX_KW, min(MAX_KW, net_kw)), abs=1e-6)
