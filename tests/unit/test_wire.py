"""Wire contract v1: inbound parsing accepts good payloads and names the fault in bad ones;
outbound builders always carry the envelope."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.contract import wire
from flexedge.contract.messages import BalancingControlMsg, BalancingTradeMsg, moment
from flexedge.controller.core.control_admission import ControlRequest
from flexedge.controller.core.model import AckStatus, Offer
from flexedge.controller.core.reports import AssetDelivery, DeliveryReport
from flexedge.controller.core.trade_admission import TradeRequest
from flexedge.errors import MessageRejected
from tests.support.properties import examples

JAN_1_2024 = 1704067200.0  # 2024-01-01T00:00:00Z


def trade(**changes: Any) -> dict[str, Any]:
    """A valid balancing_trade as a market builds it, then `changes` (good or bad) on top."""
    message = BalancingTradeMsg(
        v=1,
        id="msg-1",
        offer_id="offer-7",
        asset="battery-1",
        slot_start=moment(JAN_1_2024),
        energy_kwh=1.25,
        price_ct=43.75,
    )
    return {**wire.dump(message), **changes}


def control(**changes: Any) -> dict[str, Any]:
    message = BalancingControlMsg(
        v=1,
        id="msg-2",
        tariff_id="tariff-1",
        timeslot_start=moment(JAN_1_2024 + 900),
        kwh=-2.5,
        payment=0.3,
    )
    return {**wire.dump(message), **changes}


def without(payload: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != key}


def dumps(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


# --- inbound: good payloads -----------------------------------------------------------------


def test_valid_trade_parses() -> None:
    request = wire.parse_inbound("balancing_trade", dumps(trade()))
    assert request == TradeRequest(
        id="msg-1",
        offer_id="offer-7",
        asset="battery-1",
        slot_start=JAN_1_2024,
        energy_kwh=1.25,
        price_ct=43.75,
    )
    assert isinstance(request.slot_start, float)


def test_valid_control_parses() -> None:
    request = wire.parse_inbound("balancing_control", dumps(control()))
    assert request == ControlRequest(
        id="msg-2", tariff_id="tariff-1", timeslot_start=JAN_1_2024 + 900, kwh=-2.5, payment=0.3
    )
    assert isinstance(request.timeslot_start, float)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2024-01-01T00:00:00Z", JAN_1_2024),
        ("2024-01-01T00:00:00+00:00", JAN_1_2024),
        ("2024-01-01T00:00:00.250Z", JAN_1_2024 + 0.25),
        ("2024-01-01T00:00:00.250+00:00", JAN_1_2024 + 0.25),
        ("2024-01-01T01:00:00+01:00", JAN_1_2024),
        ("2023-12-31T19:00:00-05:00", JAN_1_2024),
        ("1970-01-01T00:00:00Z", 0.0),
    ],
)
def test_iso_times_become_epoch_seconds(text: str, epoch: float) -> None:
    parsed_trade = wire.parse_inbound("balancing_trade", dumps(trade(slot_start=text)))
    assert isinstance(parsed_trade, TradeRequest)
    assert parsed_trade.slot_start == pytest.approx(epoch, abs=1e-6)
    parsed_control = wire.parse_inbound("balancing_control", dumps(control(timeslot_start=text)))
    assert isinstance(parsed_control, ControlRequest)
    assert parsed_control.timeslot_start == pytest.approx(epoch, abs=1e-6)


def test_unknown_fields_are_ignored() -> None:
    request = wire.parse_inbound("balancing_trade", dumps(trade(extra="later versions")))
    assert request.id == "msg-1"


# --- inbound: bad payloads ------------------------------------------------------------------

NAN_TEXT = dumps(trade()).replace(b"1.25", b"NaN")
INF_TEXT = dumps(trade()).replace(b"1.25", b"Infinity")
NEG_INF_TEXT = dumps(control()).replace(b"0.3", b"-Infinity")
assert b"NaN" in NAN_TEXT and b"Infinity" in INF_TEXT and b"-Infinity" in NEG_INF_TEXT

BAD_PAYLOADS: list[tuple[str, str, bytes, tuple[str, ...]]] = [
    ("not-json", "balancing_trade", b"{id: msg-1", ("not valid JSON",)),
    ("empty", "balancing_trade", b"", ("not valid JSON",)),
    (
        "not-utf8",
        "balancing_trade",
        b'{"v": 1, "type": "balancing_trade", "id": "caf\xe9"}',
        ("not UTF-8",),
    ),
    ("json-array", "balancing_trade", dumps([trade()]), ("JSON object",)),
    ("json-string", "balancing_trade", dumps("balancing_trade"), ("JSON object",)),
    (
        "control-on-trade-topic",
        "balancing_trade",
        dumps(control()),
        ("'type'", "balancing_trade", "balancing_control"),
    ),
    (
        "trade-on-control-topic",
        "balancing_control",
        dumps(trade()),
        ("'type'", "balancing_control", "balancing_trade"),
    ),
    ("type-missing", "balancing_trade", dumps(without(trade(), "type")), ("'type'",)),
    ("id-missing", "balancing_trade", dumps(without(trade(), "id")), ("'id'", "missing")),
    ("id-empty", "balancing_control", dumps(control(id="")), ("'id'",)),
    (
        "energy-missing",
        "balancing_trade",
        dumps(without(trade(), "energy_kwh")),
        ("'energy_kwh'", "missing"),
    ),
    ("kwh-missing", "balancing_control", dumps(without(control(), "kwh")), ("'kwh'", "missing")),
    (
        "energy-word-string",
        "balancing_trade",
        dumps(trade(energy_kwh="lots")),
        ("'energy_kwh'", "number"),
    ),
    (
        "energy-numeric-string",
        "balancing_trade",
        dumps(trade(energy_kwh="1.25")),
        ("'energy_kwh'", "number"),
    ),
    ("energy-bool", "balancing_trade", dumps(trade(energy_kwh=True)), ("'energy_kwh'", "number")),
    ("energy-nan", "balancing_trade", NAN_TEXT, ("'energy_kwh'", "finite")),
    ("energy-infinity", "balancing_trade", INF_TEXT, ("'energy_kwh'", "finite")),
    ("payment-minus-infinity", "balancing_control", NEG_INF_TEXT, ("'payment'", "finite")),
    (
        "naive-slot-start",
        "balancing_trade",
        dumps(trade(slot_start="2024-01-01T00:00:00")),
        ("'slot_start'", "timezone"),
    ),
    (
        "naive-timeslot-start",
        "balancing_control",
        dumps(control(timeslot_start="2024-01-01T00:15:00")),
        ("'timeslot_start'", "timezone"),
    ),
    ("version-2", "balancing_trade", dumps(trade(v=2)), ("'v'", "1")),
    ("version-missing", "balancing_control", dumps(without(control(), "v")), ("'v'", "missing")),
]


@pytest.mark.parametrize(
    ("topic_type", "payload", "expected"),
    [case[1:] for case in BAD_PAYLOADS],
    ids=[case[0] for case in BAD_PAYLOADS],
)
def test_bad_payload_is_rejected_with_reason(
    topic_type: str,
    payload: bytes,
    expected: tuple[str, ...],
) -> None:
    with pytest.raises(MessageRejected) as info:
        wire.parse_inbound(topic_type, payload)
    reason = info.value.reason
    assert reason == str(info.value)
    for needle in expected:
        assert needle in reason, f"{needle!r} not in {reason!r}"


def test_peek_id_finds_the_id_even_in_a_rejected_message() -> None:
    payload = dumps(trade(v=2))
    with pytest.raises(MessageRejected):
        wire.parse_inbound("balancing_trade", payload)
    assert wire.peek_id(payload) == "msg-1"
    assert wire.peek_id(b"\xff\xfe not json") is None
    assert wire.peek_id(dumps([1])) is None
    assert wire.peek_id(dumps({"id": ""})) is None
    assert wire.peek_id(dumps({"id": 5})) is None


# --- outbound builders ----------------------------------------------------------------------

OFFER = Offer(
    id="off-1",
    asset="battery-1",
    slot_start=JAN_1_2024,
    slot_end=JAN_1_2024 + 900,
    energy_kwh=-1.5,
    rate_ct_per_kwh=33.0,
)


def report(delivered_kwh: float = 1.2, commitment_id: str = "c-42") -> DeliveryReport:
    return DeliveryReport(
        commitment_id=commitment_id,
        ref="msg-1",
        ref_type="balancing_trade",
        window_start=JAN_1_2024,
        window_end=JAN_1_2024 + 900,
        requested_kwh=1.25,
        accepted_kwh=1.25,
        delivered_kwh=delivered_kwh,
        status="delivered",
        coverage=0.98,
        settlement=43.75,
        assets=(AssetDelivery(asset="battery-1", baseline_kw=0.0, delivered_kwh=delivered_kwh),),
    )


def summary(**changes: Any) -> dict[str, Any]:
    """One asset as the control loop summarises it for status and telemetry."""
    return {"p_kw": 1.0, "soc": None, "available": True, "setpoint_kw": None, **changes}


def all_builders() -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "ack",
            wire.ack(
                id="ack-1",
                ref="msg-1",
                ref_type="balancing_trade",
                status=AckStatus.ACCEPTED,
                reason="",
                commitment_id="c-42",
                accepted_kwh=1.25,
            ),
        ),
        (
            "ack",
            wire.ack(
                id="ack-2",
                ref=None,
                ref_type=None,
                status=AckStatus.REJECTED,
                reason="payload is not UTF-8",
                commitment_id=None,
            ),
        ),
        ("balancing_offer", wire.balancing_offer(OFFER)),
        ("balancing_order", wire.balancing_order("tariff-1", 1.5, 0.12, "bo-1")),
        ("delivery_report", wire.delivery_report(report())),
        ("status", wire.status("online", {"battery-1": summary(soc=0.5)}, JAN_1_2024)),
        ("telemetry", wire.telemetry({"battery-1": summary(p_kw=1.0)}, JAN_1_2024)),
    ]


@pytest.mark.parametrize(
    ("kind", "payload"),
    all_builders(),
    ids=[f"{kind}-{i}" for i, (kind, _) in enumerate(all_builders())],
)
def test_every_outbound_payload_has_the_envelope(kind: str, payload: dict[str, Any]) -> None:
    assert payload["v"] == 1
    assert payload["type"] == kind
    assert isinstance(payload["id"], str) and payload["id"]
    # And it survives the strict encoder as a JSON object.
    assert json.loads(wire.encode(payload)) == payload


def test_builder_fields() -> None:
    accepted = wire.ack(
        id="ack-1",
        ref="msg-1",
        ref_type="balancing_trade",
        status=AckStatus.CLIPPED,
        reason="clipped to 1 kWh",
        commitment_id="c-1",
        accepted_kwh=1.0,
    )
    assert (accepted["ref"], accepted["status"], accepted["accepted_kwh"]) == (
        "msg-1",
        "clipped",
        1.0,
    )
    rejected = wire.ack(
        id="ack-2",
        ref="m",
        ref_type=None,
        status=AckStatus.REJECTED,
        reason="no",
        commitment_id=None,
    )
    assert "accepted_kwh" not in rejected
    assert rejected["status"] == "rejected"

    offer = wire.balancing_offer(OFFER)
    assert offer["id"] == "off-1"
    assert offer["slot_start"] == "2024-01-01T00:00:00.000Z"
    assert offer["slot_end"] == "2024-01-01T00:15:00.000Z"
    assert offer["price_ct"] == pytest.approx(49.5)

    order = wire.balancing_order("tariff-1", 1.5, 0.12, "bo-1")
    assert (order["id"], order["tariff_id"], order["exercise_ratio"], order["price_per_kwh"]) == (
        "bo-1",
        "tariff-1",
        1.5,
        0.12,
    )

    dr = wire.delivery_report(report())
    assert dr["window_start"] == "2024-01-01T00:00:00.000Z"
    assert dr["assets"] == [{"asset": "battery-1", "baseline_kw": 0.0, "delivered_kwh": 1.2}]

    assert wire.status("safe", {}, JAN_1_2024)["ts"] == "2024-01-01T00:00:00.000Z"
    assert wire.telemetry({}, JAN_1_2024 + 0.5)["ts"] == "2024-01-01T00:00:00.500Z"


def test_fresh_ids_are_unique() -> None:
    ids = {wire.status("online", {}, 0.0)["id"] for _ in range(50)}
    ids |= {wire.telemetry({}, 0.0)["id"] for _ in range(50)}
    assert len(ids) == 100


def test_delivery_report_id_is_stable_per_commitment() -> None:
    first = wire.delivery_report(report(delivered_kwh=0.4))
    again = wire.delivery_report(report(delivered_kwh=1.2))
    other = wire.delivery_report(report(commitment_id="c-43"))
    assert first["id"] == again["id"] == "dr-c-42"
    assert other["id"] == "dr-c-43"


@pytest.mark.parametrize(
    "ts", [0.0, JAN_1_2024, JAN_1_2024 + 0.123, 1.5, -86400.25, 4102444800.999]
)
def test_iso_ends_with_z_and_round_trips(ts: float) -> None:
    text = wire.iso(ts)
    assert text.endswith("Z")
    assert "+00:00" not in text
    back = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert back.tzinfo is not None and back.utcoffset() == timedelta(0)
    # Milliseconds are kept: the round trip is exact to the millisecond.
    assert back.timestamp() == pytest.approx(ts, abs=1e-3)
    assert wire.iso(back.timestamp()) == text
    # And the parser reads what the builder writes.
    parsed = wire.parse_inbound("balancing_trade", dumps(trade(slot_start=text)))
    assert isinstance(parsed, TradeRequest)
    assert parsed.slot_start == back.timestamp()


def test_iso_exact_values() -> None:
    assert wire.iso(0) == "1970-01-01T00:00:00.000Z"
    assert wire.iso(JAN_1_2024 + 0.25) == "2024-01-01T00:00:00.250Z"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_refuses_non_finite(bad: float) -> None:
    with pytest.raises(ValueError):
        wire.encode(wire.balancing_order("tariff-1", bad, 0.12, "bo-1"))
    with pytest.raises(ValueError):
        wire.encode(wire.telemetry({"battery-1": summary(p_kw=bad)}, JAN_1_2024))


def test_encode_is_compact_utf8_json() -> None:
    payload = wire.balancing_order("tarif-é", 1.5, 0.12, "bo-1")
    data = wire.encode(payload)
    assert isinstance(data, bytes)
    assert b", " not in data and b": " not in data
    assert json.loads(data.decode("utf-8")) == payload


# --- property: what a market sends is what the controller reads ------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware = st.builds(
    lambda naive, tz: naive.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offsets,
)


@settings(max_examples=examples(150), deadline=None)
@given(energy=finite, price=finite, moment=aware, utc_z=st.booleans())
def test_trade_round_trips(energy: float, price: float, moment: datetime, utc_z: bool) -> None:
    if utc_z:
        moment = moment.astimezone(UTC)
        slot_text = moment.isoformat().replace("+00:00", "Z")
    else:
        slot_text = moment.isoformat()
    payload = json.dumps(trade(slot_start=slot_text, energy_kwh=energy, price_ct=price))

    request = wire.parse_inbound("balancing_trade", payload.encode("utf-8"))

    assert isinstance(request, TradeRequest)
    assert request.energy_kwh == energy
    assert math.copysign(1.0, request.energy_kwh) == math.copysign(1.0, energy)
    assert request.price_ct == price
    assert request.slot_start == moment.timestamp()
    assert (request.id, request.offer_id, request.asset) == ("msg-1", "offer-7", "battery-1")
