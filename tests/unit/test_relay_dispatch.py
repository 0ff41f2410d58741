"""A relay load under a commitment, through the real dispatcher and metering on a fake heater:
with its minimum on and off times it sheds in one block and is delivered; without them the
closed loop toggles it nearly every tick to hit the average."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from flexedge.config.loader import load_site
from flexedge.controller.core.model import Commitment, RefType
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store
from flexedge.errors import ConfigProblems
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import BASE, Clock, fake_site, offline_link, queued

DEMAND_KW = 2.0
WINDOW_S = 60.0
KWH = DEMAND_KW * 30 / 3600  # half the window shed


def heater_site(tmp_path: Path, min_s: float) -> Path:
    path = fake_site(tmp_path).path
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["slot_seconds"] = 120
    raw["devices"].append(
        {
            "name": "heater",
            "kind": "flexible_load",
            "transport": "modbus-tcp",
            "host": "127.0.0.1",
            "port": 5021,
            "control": "relay",
            "baseline_profile": [[0, DEMAND_KW]],
            "curtailable_share": 1.0,
            "max_kw": 3.0,
            "relay_min_on_s": min_s,
            "relay_min_off_s": min_s,
        }
    )
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def switches_and_report(tmp_path: Path, min_s: float) -> tuple[int, dict[str, object]]:
    clock = Clock(T0)
    battery = FakeDevice("b1", clock, soc=0.5)
    heater = FakeDevice("heater", clock, p_kw=-DEMAND_KW, released_p_kw=-DEMAND_KW)
    site = load_site(heater_site(tmp_path, min_s))
    store = Store(site.log_db_path)
    try:
        control = ControlLoop(
            site,
            {"b1": battery, "heater": heater},
            store,
            Outbox(store, offline_link(), BASE, clock),
            clock,
        )

        async def scenario() -> None:
            await control.tick()
            control.add(
                Commitment(
                    "c1",
                    "c1",
                    RefType.BALANCING_CONTROL,
                    T0 + 1,
                    T0 + 1 + WINDOW_S,
                    KWH,
                    KWH,
                    (("heater", 1.0),),
                )
            )
            for second in range(1, int(WINDOW_S) + 10):
                clock.now = T0 + second
                await control.tick()

        run(scenario())
        [report] = queued(store, "market/delivery")
    finally:
        store.close()
    shed = [w is not None for w in heater.writes]
    return sum(1 for a, b in itertools.pairwise(shed) if a != b), report


def test_a_relay_with_minimum_times_sheds_in_one_block_and_delivers(tmp_path: Path) -> None:
    switches, report = switches_and_report(tmp_path, min_s=30)
    assert switches <= 2  # off once, on once
    assert report["status"] == "delivered"
    assert report["delivered_kwh"] == pytest.approx(KWH, rel=0.02)


def test_without_minimum_times_the_closed_loop_chatters(tmp_path: Path) -> None:
    switches, _ = switches_and_report(tmp_path, min_s=0)
    assert switches > 10  # what the minimum times prevent


def test_a_minimum_time_longer_than_a_slot_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as caught:
        load_site(heater_site(tmp_path, min_s=200))
    fields = sorted(p.field for p in caught.value.problems)
    assert fields == [
        "devices[1] (heater).relay_min_off_s",
        "devices[1] (heater).relay_min_on_s",
    ]
    assert "longer than a slot (120 s)" in caught.value.problems[0].problem
