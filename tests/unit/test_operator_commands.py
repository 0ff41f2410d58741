"""The operator's commands on the daemon's shell, on a hand-moved clock: pause and resume,
the safe state, holding a device, the reads, every refusal changing nothing, and all of it
still in force after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flexedge.controller.daemon.daemon import Daemon
from tests.support.core_fixtures import T0
from tests.support.fake_device import FakeDevice
from tests.support.harness import run
from tests.unit.test_shell_in_process import MAX_KW, Clock, balancing_control, fake_site, queued

TOPIC = "market/balancing-control"


@contextmanager
def daemon_on(tmp_path: Path, clock: Clock, battery: FakeDevice) -> Iterator[Daemon]:
    """A daemon's shell on the log in tmp_path, started as `flexedge run` starts it."""
    daemon = Daemon(fake_site(tmp_path), clock, devices={"b1": battery})
    try:
        daemon.log_start()
        daemon.market.restore()
        daemon.operator.restore()
        run(daemon.control.tick())
        daemon.market.standing.refresh_orders()
        yield daemon
    finally:
        daemon.store.close()


def ask(daemon: Daemon, command: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return run(daemon.commands.answer(command, json.dumps(body or {}).encode()))


def decide(daemon: Daemon, msg_id: str) -> None:
    """A control event for the slot [T0, T0 + 30), decided and dispatched."""

    async def handled() -> None:
        await daemon.market.handle(balancing_control(msg_id, T0, 0.01), TOPIC)
        await daemon.control.dispatched()

    run(handled())


def events(daemon: Daemon) -> list[str]:
    return [row[0] for row in daemon.store.db.execute("SELECT kind FROM events ORDER BY seq")]


def test_pause_rejects_new_messages_withdraws_orders_and_resume_undoes_it(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with daemon_on(tmp_path, clock, battery) as daemon:
        paused = ask(daemon, "pause")
        again = ask(daemon, "pause")
        decide(daemon, "bce-1")
        offers = daemon.market.publish_offers()
        status = daemon.commands.status()
        resumed = ask(daemon, "resume")
        not_paused = ask(daemon, "resume")
        acks = queued(daemon.store, "market/ack")
        orders = queued(daemon.store, "market/balancing-order/tariff-1/up")
        kinds = events(daemon)
    assert paused == {"ok": True, "mode": "paused", "ended": []}
    assert again == {"ok": False, "error": "pause: already paused"}
    [ack] = acks
    assert ack["status"] == "rejected" and ack["reason"].startswith("paused:")
    assert offers == [] and status["state"] == "starting"  # not online yet in this shell
    # Published, withdrawn (an empty retained message clears it), published again.
    assert [o.get("exercise_ratio") for o in orders] == [1.5, None, 1.5]
    assert resumed["mode"] == "running"
    assert not_paused == {"ok": False, "error": "resume: not paused"}
    assert kinds.count("operator-pause") == 1 and kinds.count("operator-resume") == 1
    assert kinds.count("command-rejected") == 2  # what was asked, refused ones too


def test_safe_ends_the_open_commitments_early_and_holds_every_device_at_its_safe_setpoint(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with daemon_on(tmp_path, clock, battery) as daemon:
        decide(daemon, "bce-1")
        for second in range(6, 10):
            clock.now = T0 + second
            run(daemon.control.tick())
        safe = ask(daemon, "safe")
        clock.now = T0 + 11
        run(daemon.control.tick())
        [report] = queued(daemon.store, "market/delivery")
        held = ask(daemon, "hold", {"device": "b1", "kw": 1.0, "for_s": 60})
        commitments = ask(daemon, "commitments")
    assert safe["mode"] == "safe" and safe["ended"] == [report["commitment_id"]]
    assert report["status"] in ("partial", "failed") and "safe state" in report["reason"]
    assert 0 < report["delivered_kwh"] < report["accepted_kwh"]
    assert battery.writes[-2:] == [0.0, 0.0]  # safe now, and every tick after
    assert held == {
        "ok": False,
        "error": "hold: the site is in its safe state: flexedge resume first",
    }
    assert commitments == {"ok": True, "commitments": []}


def test_a_held_device_gets_its_setpoint_and_is_out_of_dispatch_until_released(
    tmp_path: Path,
) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with daemon_on(tmp_path, clock, battery) as daemon:
        refusals = [
            ask(daemon, "hold", {"device": "nope", "kw": 1.0, "for_s": 60}),
            ask(daemon, "hold", {"device": "b1", "kw": MAX_KW + 1, "for_s": 60}),
            ask(daemon, "hold", {"device": "b1", "kw": 1.0, "for_s": 86400}),
            ask(daemon, "hold", {"device": "b1", "kw": "lots", "for_s": 60}),
            ask(daemon, "release", {"device": "b1"}),
        ]
        held = ask(daemon, "hold", {"device": "b1", "kw": 2.0, "for_s": 30})
        decide(daemon, "bce-1")
        clock.now = T0 + 6
        run(daemon.control.tick())
        devices = ask(daemon, "devices")["devices"]
        progress = daemon.control.commitments_in_progress()[0][1].delivered_kwh
        status = daemon.commands.status()
        released = ask(daemon, "release", {"device": "b1"})
        clock.now = T0 + 7
        run(daemon.control.tick())
    assert [r["ok"] for r in refusals] == [False] * 5
    assert "unknown device 'nope'" in refusals[0]["error"]
    assert "outside what b1 can do now" in refusals[1]["error"]
    assert "beyond limits.max_hold_s" in refusals[2]["error"]
    assert "kw" in refusals[3]["error"] and "is not held" in refusals[4]["error"]
    assert held["hold"]["kw"] == 2.0
    assert battery.writes[-2] == 2.0  # held, not dispatched for the commitment
    assert progress == 0.0  # what a held device does is no commitment's delivery
    assert devices["b1"]["held"]["kw"] == 2.0 and devices["b1"]["failures"] == 0
    assert status["holds"] == [held["hold"]]
    assert released == {"ok": True, "device": "b1", "hold": None}
    # Back in the plan: what the commitment still needs in the 23 s it has left.
    assert battery.writes[-1] == pytest.approx(0.01 / (23 / 3600), rel=0.1)


def test_the_operators_mode_holds_and_orders_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    battery = FakeDevice("b1", clock, soc=0.5)
    with daemon_on(tmp_path, clock, battery) as daemon:
        ask(daemon, "pause")
        ask(daemon, "hold", {"device": "b1", "kw": -1.0, "for_s": 20})
        order = daemon.commands.set_order(b'{"tariff_id": "tariff-1", "exercise_ratio": 1.2}')
    assert order["ok"]
    clock.now += 2  # the daemon restarts
    with daemon_on(tmp_path, clock, battery) as daemon:
        mode, holds = daemon.operator.mode, daemon.commands.status()["holds"]
        policy = daemon.market.standing.policy("tariff-1", "up")
        written = battery.writes[-1]
        clock.now += 20  # past the hold's end
        daemon.operator.expire_holds()
        after = daemon.commands.status()["holds"]
    assert mode == "paused"
    assert [(h["device"], h["kw"]) for h in holds] == [("b1", -1.0)]
    assert written == -1.0  # the first tick after the restart already holds it
    assert policy is not None and policy.exercise_ratio == 1.2  # not the site file's 1.5
    assert after == []
