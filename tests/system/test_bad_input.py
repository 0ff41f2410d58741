"""Bad inbound messages against the running daemon: each gets one ack that says what is wrong,
is logged, and changes nothing (no commitment, no setpoint)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from flexedge.contract.messages import (
    BalancingControlMsg,
    BalancingTradeMsg,
    EconomicControlMsg,
    SpotTradeMsg,
    moment,
)
from flexedge.contract.wire import ack_id, dump, iso
from flexedge.tools.harness.broker import PrivateBroker
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.harness import run, wait_for
from tests.support.site_process import RunningSite, running_site
from tests.unit.test_wire_hostile_bytes import HOSTILE

SLOT = 20


@pytest.fixture(scope="module")
def site(broker: PrivateBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    workdir: Path = tmp_path_factory.mktemp("bad-input")
    with running_site(workdir, broker, slot_seconds=SLOT) as running:
        yield running


def live_offer(site: RunningSite, sign: int = 1) -> dict[str, Any]:
    """A current offer of the daemon, as the market saw it (from the daemon's own log)."""
    deadline = time.time() + SLOT + 10
    while time.time() < deadline:
        rows = site.query(
            "SELECT id, asset, slot_start, energy_kwh, rate_ct_per_kwh FROM offers "
            "WHERE slot_end > ? AND energy_kwh * ? > 0 ORDER BY slot_start DESC LIMIT 1",
            time.time() + 4,
            sign,
        )
        if rows:
            oid, asset, start, energy, rate = rows[0]
            return {
                "id": oid,
                "asset": asset,
                "slot_start": iso(start),
                "energy_kwh": energy,
                "rate_ct_per_kwh": rate,
            }
        time.sleep(0.3)
    raise AssertionError("the daemon published no usable offer")


def trade(offer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A valid trade of a quarter of the offer, then `changes` (good or bad) on top."""
    energy = changes.pop("energy_kwh", round(offer["energy_kwh"] / 4, 4))
    message = BalancingTradeMsg(
        v=1,
        id=f"t-{time.time_ns()}",
        offer_id=offer["id"],
        asset=offer["asset"],
        slot_start=datetime.fromisoformat(offer["slot_start"]),
        energy_kwh=energy,
        price_ct=round(offer["rate_ct_per_kwh"] * abs(energy), 6),
    )
    return {**dump(message), **changes}


def control(**changes: Any) -> dict[str, Any]:
    now = time.time()
    message = BalancingControlMsg(
        v=1,
        id=f"e-{time.time_ns()}",
        tariff_id="tariff-1",
        timeslot_start=moment(now - now % SLOT),
        kwh=0.001,
        payment=0.01,
    )
    return {**dump(message), **changes}


def spot(**changes: Any) -> dict[str, Any]:
    now = time.time()
    message = SpotTradeMsg(
        v=1,
        id=f"s-{time.time_ns()}",
        asset="battery-1",
        slot_start=moment(now - now % SLOT),
        energy_kwh=1.0,
        side="buy",
        rate_ct_per_kwh=25.0,
    )
    return {**dump(message), **changes}


def economic(**changes: Any) -> dict[str, Any]:
    now = time.time()
    message = EconomicControlMsg(
        v=1,
        id=f"ec-{time.time_ns()}",
        tariff_id="tariff-1",
        timeslot_start=moment(now - now % SLOT),
        curtailment_ratio=0.5,
    )
    return {**dump(message), **changes}


def exchange(site: RunningSite, topic: str, payload: bytes, ref: str | None) -> dict[str, Any]:
    """Send one message and return its ack (matched by ref, or the next ack without one)."""

    async def send_and_wait() -> dict[str, Any]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            market.send(topic, payload)
            return await market.wait_for(
                lambda m: m.get("type") == "ack" and m.get("ref") == ref, 10
            )
        finally:
            await market.stop()

    return run(send_and_wait())


def counts(site: RunningSite) -> tuple[int, int]:
    commitments = site.query("SELECT COUNT(*) FROM commitments")[0][0]
    setpoints = site.query("SELECT COUNT(*) FROM setpoints WHERE cause != 'tick'")[0][0]
    return commitments, setpoints


SPOT = "market/spot-trade"
ECONOMIC = "market/economic-control"
TRADE = "market/balancing-trade"
CONTROL = "market/balancing-control"
Case = Callable[[RunningSite], tuple[str, dict[str, Any] | bytes]]

CASES: dict[str, tuple[Case, str]] = {
    "malformed JSON": (
        lambda s: (CONTROL, b'{"v":1,"type":"balancing_control",'),
        "not valid JSON",
    ),
    "not an object": (lambda s: (CONTROL, b"[1, 2]"), "must be a JSON object"),
    "missing field": (
        lambda s: (TRADE, {k: v for k, v in trade(live_offer(s)).items() if k != "energy_kwh"}),
        "field 'energy_kwh' is missing",
    ),
    "wrongly typed field": (lambda s: (CONTROL, control(kwh="lots")), "field 'kwh'"),
    "wrong type for topic": (lambda s: (TRADE, control()), "must be 'balancing_trade'"),
    "unknown asset": (
        lambda s: (TRADE, trade(live_offer(s), asset="ghost")),
        "'ghost' is not in the asset registry",
    ),
    "unknown tariff": (lambda s: (CONTROL, control(tariff_id="nope")), "unknown tariff 'nope'"),
    "unknown offer": (
        lambda s: (TRADE, trade(live_offer(s), offer_id="no-such-offer")),
        "unknown offer 'no-such-offer'",
    ),
    "trade larger than its offer": (
        lambda s: (TRADE, trade(o := live_offer(s), energy_kwh=round(o["energy_kwh"] * 2, 4))),
        "exceeds what is left of offer",
    ),
    "trade of the other sign": (
        lambda s: (TRADE, trade(o := live_offer(s), energy_kwh=-o["energy_kwh"] / 4)),
        "must have the sign of offer",
    ),
    "price not pay-as-offer": (
        lambda s: (TRADE, trade(live_offer(s), price_ct=999.0)),
        "is not the offer rate",
    ),
    "window already over": (
        lambda s: (CONTROL, control(timeslot_start=iso(time.time() - 3600))),
        "already over",
    ),
    "down-regulation on an up order": (
        lambda s: (CONTROL, control(kwh=-0.001)),
        "tariff 'tariff-1' has no down order in force",
    ),
    "unsupported version": (lambda s: (CONTROL, control(v=2)), "field 'v'"),
    "spot trade of an unknown asset": (
        lambda s: (SPOT, spot(asset="ghost")),
        "'ghost' is not in the asset registry",
    ),
    "spot trade of no energy": (lambda s: (SPOT, spot(energy_kwh=0.0)), "field 'energy_kwh'"),
    "spot trade with a bad side": (lambda s: (SPOT, spot(side="hold")), "field 'side'"),
    "curtailment ratio out of range": (
        lambda s: (ECONOMIC, economic(curtailment_ratio=1.5)),
        "field 'curtailment_ratio'",
    ),
    "economic control of a tariff without loads": (
        lambda s: (ECONOMIC, economic()),
        "has no curtailable loads",
    ),
    "economic control of an unknown tariff": (
        lambda s: (ECONOMIC, economic(tariff_id="x")),
        "unknown tariff 'x'",
    ),
    "spot trade of a slot already over": (
        lambda s: (SPOT, spot(slot_start=iso(time.time() - 3600))),
        "already over",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_message_is_rejected_with_a_reason_and_changes_nothing(
    site: RunningSite,
    case: str,
) -> None:
    build, needle = CASES[case]
    topic, body = build(site)
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    ref = None if isinstance(body, bytes) else body.get("id")
    before = counts(site)
    ack = exchange(site, topic, payload, ref)
    assert ack["status"] == "rejected", ack
    assert needle in ack["reason"], ack["reason"]
    assert ack["commitment_id"] is None
    assert counts(site) == before
    logged = site.query(
        "SELECT status, reason FROM inbound WHERE msg_id IS ? ORDER BY seq DESC LIMIT 1", ref
    )
    assert logged == [("rejected", ack["reason"])]


def test_reused_id_is_a_duplicate_and_a_redelivery_gets_the_same_ack(site: RunningSite) -> None:
    first = control()
    payload = json.dumps(first).encode()
    ack = exchange(site, CONTROL, payload, first["id"])
    assert ack["status"] == "accepted"
    # The ack goes out before the dispatch it causes is logged: count from after that row.
    caused = "SELECT COUNT(*) FROM setpoints WHERE cause LIKE ?"
    cid = ack["commitment_id"]
    wait_for(lambda: site.query(caused, f"%{cid}%")[0][0], 10, f"the setpoint {cid} caused")
    before = counts(site)
    # The same bytes again (as the broker redelivers after a crash): the same ack, same id.
    again = exchange(site, CONTROL, payload, first["id"])
    assert again == ack
    # Another message under the id: a duplicate, with an ack id of its own.
    reused = exchange(site, CONTROL, json.dumps({**first, "kwh": 0.002}).encode(), first["id"])
    assert reused["status"] == "duplicate" and reused["id"] != ack["id"]
    assert reused["commitment_id"] == ack["commitment_id"]
    assert first["id"] in reused["reason"] and "already accepted" in reused["reason"]
    assert counts(site) == before


def test_hostile_payloads_get_exactly_one_short_ack_each(site: RunningSite) -> None:
    """Deep nesting, lone surrogates, invalid UTF-8, 300 kB fields, NaN, non-objects: each is
    answered once, under the ack id derived from its topic and bytes, and changes nothing."""
    sent = {
        ack_id(f"{site.prefix}/{site.site}/{CONTROL}", payload): payload
        for _, payload, _ in HOSTILE.values()
    }
    before, started = counts(site), time.time()

    async def send_all() -> list[dict[str, Any]]:
        market = MarketClient(site.host, site.port, site.prefix, site.site)
        await market.start()
        try:
            for payload in sent.values():
                market.send(CONTROL, payload)
            for answer_id in sent:
                await market.wait_for(lambda m, i=answer_id: m.get("id") == i, 15)
            # Acks go out in order: once this one is in, any second ack would be too.
            marker = control(tariff_id="nope")  # rejected: changes nothing either
            market.send(CONTROL, marker)
            await market.wait_for(lambda m: m.get("ref") == marker["id"], 10)
            return [m for m in market.seen if m.get("type") == "ack"]
        finally:
            await market.stop()

    acks = run(send_all())
    answered = [a["id"] for a in acks if a["id"] in sent]
    assert sorted(answered) == sorted(sent)  # one each, none twice
    for answer in acks:
        if answer["id"] in sent:
            assert answer["status"] == "rejected" and answer["commitment_id"] is None
            assert 0 < len(answer["reason"]) < 300 and len(answer.get("ref") or "") <= 200
    assert counts(site) == before
    # One inbound row each (`[1, 2]` was sent before too, by a case above: its row is older).
    rows = site.query(
        "SELECT ack_id, COUNT(*) FROM inbound WHERE received_ts >= ? AND ack_id LIKE 'ack-%' "
        "GROUP BY ack_id",
        started,
    )
    assert {answer_id: n for answer_id, n in rows if answer_id in sent} == dict.fromkeys(sent, 1)


def test_residual_offer_ids_name_the_rest_of_an_offer_and_bad_ones_change_nothing(
    site: RunningSite,
) -> None:
    """A partial trade announces a residual id (gsy-e); trades on it take what is left of the
    same offer. Each bad use is rejected with a reason naming the id, logged, and changes
    nothing."""
    supply, demand = live_offer(site), live_offer(site, -1)
    part = round(supply["energy_kwh"] / 4, 4)
    residual = f"rest-{time.time_ns()}"

    def send(body: dict[str, Any]) -> dict[str, Any]:
        return exchange(site, TRADE, json.dumps(body).encode(), body["id"])

    first = trade(supply, energy_kwh=part, residual_offer_id=residual)
    ack = send(first)
    assert {k: ack[k] for k in ("ref", "ref_type", "status", "reason", "commitment_id")} == {
        "ref": first["id"],
        "ref_type": "balancing_trade",
        "status": "accepted",
        "reason": "",
        "commitment_id": f"cm-{first['id']}",
    }
    assert ack["accepted_kwh"] == pytest.approx(part)
    # Its dispatch follows the ack (commitments that arrive together are written together):
    # let its setpoint row land before counting what the bad trades change.
    wait_for(
        lambda: (
            site.query("SELECT COUNT(*) FROM setpoints WHERE cause LIKE ?", f"%cm-{first['id']}%")[
                0
            ][0]
            > 0
        ),
        10,
        "the first trade's setpoint row",
    )
    on_rest = {**supply, "id": residual}
    left = supply["energy_kwh"] - part
    bad = [
        (
            trade({**supply, "id": "rest-never"}, energy_kwh=part),
            "unknown offer 'rest-never'",
        ),
        (
            trade(on_rest, energy_kwh=round(left + 0.001, 4)),
            f"exceeds what is left of offer {residual!r} (the rest of offer {supply['id']!r})",
        ),
        (
            trade(on_rest, energy_kwh=part, residual_offer_id=demand["id"]),
            f"residual_offer_id {demand['id']!r} is the id of an existing offer",
        ),
        (
            trade(on_rest, energy_kwh=part, residual_offer_id=residual),
            f"residual_offer_id {residual!r} was already announced for offer {supply['id']!r}",
        ),
    ]
    for body, reason in bad:
        before = counts(site)
        ack = send(body)
        assert (ack["ref"], ack["status"], ack["commitment_id"]) == (body["id"], "rejected", None)
        assert reason in ack["reason"], ack["reason"]
        assert "accepted_kwh" not in ack
        assert counts(site) == before
        logged = site.query("SELECT status, reason FROM inbound WHERE msg_id = ?", body["id"])
        assert logged == [("rejected", ack["reason"])]
    rest = trade(on_rest, energy_kwh=part)
    ack = send(rest)
    assert (ack["status"], ack["reason"], ack["commitment_id"]) == (
        "accepted",
        "",
        f"cm-{rest['id']}",
    )
    rows = site.query(
        "SELECT ref, offer_id, residual_offer_id FROM commitments WHERE ref IN (?, ?)",
        first["id"],
        rest["id"],
    )
    assert sorted(rows) == sorted(
        [(first["id"], supply["id"], residual), (rest["id"], supply["id"], None)]
    )
