"""Inbound parsing on hostile bytes: whatever arrives, `parse_inbound` returns a request or
raises MessageRejected with a short reason that encodes to UTF-8, and the ack built from that
reason and `peek_id`'s ref encodes too. Nothing else escapes the parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flexedge.contract import wire
from flexedge.contract.messages import REASON_CHARS, Ack
from flexedge.controller.core.model import AckStatus
from flexedge.errors import MessageRejected, excerpt
from tests.unit.test_wire import control, dumps, trade

TOPICS = sorted(wire.INBOUND_TYPES.values())
HUGE = "x" * 300_000
NESTED = b'{"v":1,"type":"balancing_control","deep":' + b"[" * 10_000 + b"]" * 10_000 + b"}"


def patched(payload: dict[str, Any], field: str, raw: str) -> bytes:
    """`payload` with the JSON text `raw` as the value of `field` (for what json.dumps won't
    write: lone surrogate escapes, NaN next to a valid document)."""
    return dumps({**payload, field: "@@"}).replace(b'"@@"', raw.encode("ascii"))


def rejection(topic_type: str, payload: bytes) -> str:
    with pytest.raises(MessageRejected) as info:
        wire.parse_inbound(topic_type, payload)
    return info.value.reason


def ack_of(payload: bytes, reason: str) -> bytes:
    """The rejection ack as the desk builds it, encoded for the wire."""
    message = wire.ack(
        id=wire.ack_id("flexedge/s/market/balancing-control", payload),
        ref=wire.peek_id(payload),
        ref_type="balancing_control",
        status=AckStatus.REJECTED,
        reason=reason,
        commitment_id=None,
    )
    return wire.encode(message)


def assert_short_and_encodable(reason: str) -> None:
    assert reason
    assert len(reason) < 300, len(reason)
    reason.encode("utf-8")


HOSTILE: dict[str, tuple[str, bytes, str]] = {
    "nested 10,000 deep": ("balancing_control", NESTED, "nested too deeply"),
    "nested 10,000 deep at the top": ("balancing_control", b"[" * 10_000, "nested too deeply"),
    "lone surrogate in id": (
        "balancing_control",
        patched(control(), "id", '"\\ud800"'),
        "lone surrogate",
    ),
    "lone surrogate in tariff_id": (
        "balancing_control",
        patched(control(), "tariff_id", '"t\\udfff"'),
        "lone surrogate",
    ),
    "lone surrogate in an unknown field": (
        "balancing_trade",
        patched(trade(), "note", '"\\udc80"'),
        "lone surrogate",
    ),
    "invalid UTF-8": ("balancing_control", b'{"v":1,"id":"\xff\xfe"}', "not UTF-8"),
    "UTF-16 text": ("balancing_control", json.dumps(control()).encode("utf-16"), "not UTF-8"),
    "300 kB id": ("balancing_control", dumps(control(id=HUGE)), "field 'id'"),
    "300 kB tariff_id": ("balancing_control", dumps(control(tariff_id=HUGE)), "'tariff_id'"),
    "300 kB type": ("balancing_control", dumps(control(type=HUGE)), "field 'type'"),
    "300 kB number": ("balancing_control", patched(control(), "kwh", "9" * 300_000), "JSON"),
    "number beyond float": ("balancing_control", patched(control(), "kwh", "1e400"), "finite"),
    "NaN literal": ("balancing_control", patched(control(), "kwh", "NaN"), "finite"),
    "Infinity literal": ("balancing_trade", patched(trade(), "energy_kwh", "Infinity"), "finite"),
    "-Infinity literal": ("balancing_control", patched(control(), "payment", "-Infinity"), "fin"),
    "an array": ("balancing_control", b"[1, 2]", "must be a JSON object"),
    "a string": ("balancing_control", b'"hello"', "must be a JSON object"),
    "a number": ("balancing_control", b"42", "must be a JSON object"),
    "null": ("balancing_control", b"null", "must be a JSON object"),
    "empty": ("balancing_control", b"", "not valid JSON"),
    "a lone NUL byte": ("balancing_control", b"\x00", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_payload_is_a_rejection_with_a_short_reason(case: str) -> None:
    topic_type, payload, needle = HOSTILE[case]
    reason = rejection(topic_type, payload)
    assert needle in reason, reason
    assert_short_and_encodable(reason)
    assert len(ack_of(payload, reason)) < 1_000


def test_a_300_kb_field_is_quoted_as_a_short_escaped_excerpt() -> None:
    reason = rejection("balancing_control", dumps(control(tariff_id=HUGE)))
    assert f"'{'x' * 40}'... (300000 characters)" in reason
    assert excerpt("\ud800" * 3) == "'\\ud800\\ud800\\ud800'"
    assert excerpt("é") == "'é'"
    assert excerpt(10**4000).endswith("...") and len(excerpt(10**4000)) == 43


def test_ref_of_an_unusable_id_is_escaped_and_at_most_200_characters() -> None:
    assert wire.peek_id(patched(control(), "id", '"m\\ud800"')) == "m\\ud800"
    long_ref = wire.peek_id(dumps(control(id=HUGE)))
    assert long_ref == "x" * 197 + "..."
    assert wire.peek_id(dumps(control(id="größe-1"))) == "größe-1"  # usable: as it is
    assert wire.peek_id(NESTED) is None
    # Such refs still make a valid ack (its model bounds ref to 200 characters).
    Ack.model_validate(json.loads(ack_of(dumps(control(id=HUGE)), "x")))


def test_ack_bounds_any_reason_and_escapes_surrogates() -> None:
    built = wire.ack(
        id="ack-1",
        ref=None,
        ref_type=None,
        status=AckStatus.REJECTED,
        reason="\ud800" + "y" * 10_000,
        commitment_id=None,
    )
    assert len(built["reason"]) == REASON_CHARS
    assert built["reason"].startswith("\\ud800y")
    wire.encode(built)


def test_ack_ids_are_derived_from_topic_and_bytes() -> None:
    payload = dumps(control())
    first = wire.ack_id("p/s/market/balancing-control", payload)
    assert first == wire.ack_id("p/s/market/balancing-control", payload)
    assert first.startswith("ack-") and len(first) == 36
    assert first != wire.ack_id("p/s/market/balancing-control", dumps(control(kwh=-1.0)))
    assert first != wire.ack_id("p/s/market/balancing-trade", payload)


def test_good_payloads_still_parse() -> None:
    assert wire.parse_inbound("balancing_trade", dumps(trade())).id == "msg-1"
    bom = b"\xef\xbb\xbf" + dumps(control())
    assert wire.parse_inbound("balancing_control", bom).id == "msg-2"


# Arbitrary bytes, and JSON-ish bytes around the valid messages so the property reaches the
# field validators and not only the JSON parser.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
near_valid = st.builds(
    lambda base, key, value: dumps({**base, key: value}).replace(b"@", b"\\ud8"),
    st.sampled_from([control(), trade()]),
    st.sampled_from(["v", "type", "id", "tariff_id", "kwh", "energy_kwh", "slot_start", "x"]),
    json_values,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic_type=st.sampled_from(TOPICS), payload=st.binary(max_size=400) | near_valid)
@example(topic_type="balancing_control", payload=NESTED)
@example(topic_type="balancing_control", payload=patched(control(), "id", '"\\ud800"'))
def test_any_bytes_are_a_request_or_a_short_encodable_rejection(
    topic_type: str, payload: bytes
) -> None:
    try:
        request = wire.parse_inbound(topic_type, payload)
    except MessageRejected as exc:
        assert len(exc.reason) < REASON_CHARS
        exc.reason.encode("utf-8")
        Ack.model_validate(json.loads(ack_of(payload, exc.reason)))
    else:
        assert request.id
        request.id.encode("utf-8")
