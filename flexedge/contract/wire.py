"""Wire contract v1 for the daemon: inbound payloads to core requests, core results to payloads.

The messages themselves are the models in `flexedge.contract.messages`; this module translates
between them and the core's plain types. Parsing never raises anything but MessageRejected,
whatever the bytes: its reason names the field at fault, quotes at most a short escaped excerpt
of the bad value, and goes verbatim into the rejection ack. Builders return the JSON object (a
dict) that `encode` turns into the payload.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from flexedge.contract.messages import (
    COMMAND_REPLIES,
    INBOUND_MODELS,
    REASON_CHARS,
    Ack,
    AssetDeliveryMsg,
    BalancingOffer,
    BalancingOrder,
    BalancingTradeMsg,
    CommandRefused,
    DeliveryReportMsg,
    EconomicControlMsg,
    InboundMessage,
    Measurement,
    SpotTradeMsg,
    Status,
    Telemetry,
    iso,
    moment,
)
from flexedge.contract.operator import OPERATOR_REPLIES
from flexedge.controller.core.control_admission import ControlRequest, EconomicControl
from flexedge.controller.core.model import AckStatus, Offer
from flexedge.controller.core.reports import DeliveryReport
from flexedge.controller.core.trade_admission import SpotTrade, TradeRequest
from flexedge.errors import MessageRejected, excerpt, message_reason

__all__ = [
    "INBOUND_TYPES",
    "ack",
    "ack_id",
    "balancing_offer",
    "balancing_order",
    "command_reply",
    "delivery_report",
    "dump",
    "encode",
    "iso",
    "measurement",
    "new_id",
    "parse_inbound",
    "peek_id",
    "status",
    "telemetry",
    "to_request",
    "to_ts",
]

# Inbound topic (relative to {prefix}/{site}/) -> the message type it carries.
INBOUND_TYPES = {
    suffix: str(model.model_fields["type"].default) for suffix, model in INBOUND_MODELS.items()
}
_MODEL_OF_TYPE = {INBOUND_TYPES[suffix]: model for suffix, model in INBOUND_MODELS.items()}


def to_ts(when: datetime) -> float:
    return when.timestamp()


def _load(payload: bytes) -> Any:
    """The JSON value of a payload, or MessageRejected: strict UTF-8 (a leading BOM is
    allowed), nesting as deep as the JSON parser goes, text that is valid Unicode."""
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MessageRejected(f"payload is not UTF-8 (bad byte at {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise MessageRejected("payload is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise MessageRejected(f"payload is not valid JSON: {excerpt(str(exc), 120)}") from None
    # A `\ud800` escape on its own decodes to a lone surrogate, which neither SQLite nor the
    # ack's encoder can take; the encoder is the quickest way to find one anywhere.
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MessageRejected("payload has a lone surrogate (not Unicode) in a string") from None
    except RecursionError:
        raise MessageRejected("payload is not valid JSON: nested too deeply") from None
    return data


def peek_id(payload: bytes) -> str | None:
    """The message id, so that even a rejection can refer to it: as it is when usable (1 to 200
    characters of valid Unicode), else escaped and cut to 200 characters; None when the payload
    has no string id."""
    try:
        data = json.loads(payload.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        return None
    found: str = data["id"]
    escaped = found.encode("utf-8", "backslashreplace").decode("utf-8")
    if escaped == found and len(found) <= 200:
        return found
    return escaped if len(escaped) <= 200 else f"{escaped[:197]}..."


def parse_inbound(
    topic_type: str,
    payload: bytes,
) -> SpotTrade | TradeRequest | ControlRequest | EconomicControl:
    """Validate a payload that arrived on the topic for `topic_type`."""
    data = _load(payload)
    if not isinstance(data, dict):
        raise MessageRejected("payload must be a JSON object")
    if data.get("type") != topic_type:
        raise MessageRejected(
            f"field 'type' must be {topic_type!r} on this topic (got {excerpt(data.get('type'))})"
        )
    try:
        message = _MODEL_OF_TYPE[topic_type].model_validate(data)
        return to_request(message)
    except ValidationError as exc:
        raise MessageRejected(message_reason(exc, name_missing=True, show_input=True)) from None
    except (RecursionError, ValueError, OverflowError) as exc:  # never seen; the ack must go out
        raise MessageRejected(f"payload could not be read ({type(exc).__name__})") from None


def to_request(
    message: InboundMessage,
) -> SpotTrade | TradeRequest | ControlRequest | EconomicControl:
    """The core's plain form of a validated inbound message (times as epoch seconds)."""
    if isinstance(message, SpotTradeMsg):
        return SpotTrade(
            id=message.id,
            asset=message.asset,
            slot_start=to_ts(message.slot_start),
            energy_kwh=message.energy_kwh,
            side=message.side,
            rate_ct_per_kwh=message.rate_ct_per_kwh,
        )
    if isinstance(message, BalancingTradeMsg):
        return TradeRequest(
            id=message.id,
            offer_id=message.offer_id,
            asset=message.asset,
            slot_start=to_ts(message.slot_start),
            energy_kwh=message.energy_kwh,
            price_ct=message.price_ct,
            residual_offer_id=message.residual_offer_id,
        )
    if isinstance(message, EconomicControlMsg):
        return EconomicControl(
            id=message.id,
            tariff_id=message.tariff_id,
            timeslot_start=to_ts(message.timeslot_start),
            curtailment_ratio=message.curtailment_ratio,
        )
    return ControlRequest(
        id=message.id,
        tariff_id=message.tariff_id,
        timeslot_start=to_ts(message.timeslot_start),
        kwh=message.kwh,
        payment=message.payment,
    )


def new_id() -> str:
    return uuid.uuid4().hex


def ack_id(topic: str, payload: bytes) -> str:
    """The id of the ack to the message `payload` on `topic`: derived from both, so a message
    delivered again (the broker redelivers after a crash) is answered under the same id, and
    another message that reuses an id gets an ack of its own."""
    digest = hashlib.sha256(topic.encode("utf-8", "backslashreplace") + b"\0" + payload)
    return f"ack-{digest.hexdigest()[:32]}"


def ack(
    *,
    id: str,
    ref: str | None,
    ref_type: str | None,
    status: AckStatus,
    reason: str,
    commitment_id: str | None,
    accepted_kwh: float | None = None,
) -> dict[str, Any]:
    # Parsing keeps reasons short; this bounds those of the core too (they quote ids).
    reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(reason) > REASON_CHARS:
        reason = f"{reason[: REASON_CHARS - 3]}..."
    return dump(
        Ack(
            id=id,
            ref=ref,
            ref_type=ref_type,
            status=status.value,
            reason=reason,
            commitment_id=commitment_id,
            accepted_kwh=accepted_kwh,
        )
    )


def balancing_offer(offer: Offer) -> dict[str, Any]:
    return dump(
        BalancingOffer(
            id=offer.id,
            asset=offer.asset,
            slot_start=moment(offer.slot_start),
            slot_end=moment(offer.slot_end),
            energy_kwh=offer.energy_kwh,
            rate_ct_per_kwh=offer.rate_ct_per_kwh,
            price_ct=offer.price_ct,
        )
    )


def balancing_order(
    tariff_id: str, exercise_ratio: float, price_per_kwh: float, message_id: str
) -> dict[str, Any]:
    return dump(
        BalancingOrder(
            id=message_id,
            tariff_id=tariff_id,
            exercise_ratio=exercise_ratio,
            price_per_kwh=price_per_kwh,
        )
    )


def delivery_report(report: DeliveryReport) -> dict[str, Any]:
    return dump(
        DeliveryReportMsg(
            id=f"dr-{report.commitment_id}",
            commitment_id=report.commitment_id,
            ref=report.ref,
            ref_type=report.ref_type,
            window_start=moment(report.window_start),
            window_end=moment(report.window_end),
            requested_kwh=report.requested_kwh,
            accepted_kwh=report.accepted_kwh,
            delivered_kwh=report.delivered_kwh,
            status=report.status,  # type: ignore[arg-type]  # the core's str of three values
            coverage=report.coverage,
            settlement=report.settlement,
            reason=report.reason,
            assets=[
                AssetDeliveryMsg(
                    asset=a.asset, baseline_kw=a.baseline_kw, delivered_kwh=a.delivered_kwh
                )
                for a in report.assets
            ],
        )
    )


def measurement(
    site: str, asset: str, slot_start: float, energy_kwh: float, coverage: float
) -> dict[str, Any]:
    """Metered energy of one asset in one slot, against its baseline; the id is stable."""
    stamp = datetime.fromtimestamp(slot_start, UTC).strftime("%Y%m%dT%H%M%SZ")
    return dump(
        Measurement(
            id=f"ms-{site}.{asset}.{stamp}",
            asset=asset,
            slot_start=moment(slot_start),
            energy_kwh=round(energy_kwh, 6),
            coverage=round(coverage, 4),
        )
    )


def status(
    state: str, assets: dict[str, dict[str, Any]], ts: float, problems: list[str] | None = None
) -> dict[str, Any]:
    return dump(
        Status.model_validate(
            {
                "id": new_id(),
                "state": state,
                "ts": moment(ts),
                "assets": assets,
                "problems": problems or [],
            }
        )
    )


def telemetry(readings: dict[str, dict[str, Any]], ts: float) -> dict[str, Any]:
    return dump(Telemetry.model_validate({"id": new_id(), "ts": moment(ts), "assets": readings}))


def command_reply(command: str, body: dict[str, Any]) -> bytes:
    """The encoded reply to `cmd/{command}`: `body` checked against its reply model."""
    replies = {**COMMAND_REPLIES, **OPERATOR_REPLIES}
    model = replies[command] if body.get("ok") else CommandRefused
    return encode(dump(model.model_validate(body)))


def dump(message: BaseModel) -> dict[str, Any]:
    """A model as the JSON object it puts on the wire."""
    return message.model_dump(mode="json")


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
