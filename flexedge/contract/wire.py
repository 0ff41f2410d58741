"""Wire contract v1: parse inbound market messages, build outbound ones.

Every payload is a JSON object with "v": 1, a "type" and a unique "id"; times are ISO 8601
UTC, energy kWh, power kW. Parsing never raises anything but MessageRejected, whose reason
names the field at fault and goes verbatim into the rejection ack.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    ValidationError,
    field_validator,
)

from flexedge.controller.core.admission import (
    ControlRequest,
    EconomicControl,
    SpotTrade,
    TradeRequest,
)
from flexedge.controller.core.model import AckStatus, Offer
from flexedge.controller.core.reports import DeliveryReport
from flexedge.errors import MessageRejected

VERSION = 1
MessageId = Annotated[str, Field(min_length=1, max_length=200)]

# Inbound topic (relative to {prefix}/{site}/) -> the message type it carries.
INBOUND_TYPES = {
    "market/spot-trade": "spot_trade",
    "market/balancing-trade": "balancing_trade",
    "market/balancing-control": "balancing_control",
    "market/economic-control": "economic_control",
}


class _Inbound(BaseModel):
    # Unknown fields are ignored so the contract can grow without breaking older sites.
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1]
    id: MessageId

    @field_validator("v", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        # Literal[1] alone would take 1.0 and true (they compare equal to 1).
        if type(value) is not int:
            raise ValueError("must be the integer 1")
        return value

    @field_validator("slot_start", "timeslot_start", mode="before", check_fields=False)
    @classmethod
    def _iso_text(cls, value: object) -> object:
        # The contract says ISO 8601 text; pydantic would also take epoch numbers.
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 time string with a UTC offset")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class BalancingTradeMsg(_Inbound):
    type: Literal["balancing_trade"]
    offer_id: MessageId
    asset: MessageId
    slot_start: AwareDatetime
    energy_kwh: StrictFloat
    price_ct: StrictFloat


class BalancingControlMsg(_Inbound):
    type: Literal["balancing_control"]
    tariff_id: MessageId
    timeslot_start: AwareDatetime
    kwh: StrictFloat
    payment: StrictFloat


class EconomicControlMsg(_Inbound):
    type: Literal["economic_control"]
    tariff_id: MessageId
    timeslot_start: AwareDatetime
    curtailment_ratio: StrictFloat = Field(ge=0.0, le=1.0)


class SpotTradeMsg(_Inbound):
    type: Literal["spot_trade"]
    asset: MessageId
    slot_start: AwareDatetime
    energy_kwh: StrictFloat = Field(gt=0)
    side: Literal["buy", "sell"]
    rate_ct_per_kwh: StrictFloat


def to_ts(moment: datetime) -> float:
    return moment.timestamp()


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def peek_id(payload: bytes) -> str | None:
    """The message id if the payload has a usable one, so even a rejection can refer to it."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
        return str(data["id"])[:200]
    return None


def _reason(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        field = ".".join(str(p) for p in error["loc"]) or "payload"
        message = error["msg"]
        if error["type"] == "missing":
            problems.append(f"field {field!r} is missing")
            continue
        shown = error.get("input")
        if not isinstance(shown, dict | list):
            message += f" (got {shown!r})"
        problems.append(f"field {field!r}: {message}")
    return "; ".join(problems)


def parse_inbound(
    topic_type: str,
    payload: bytes,
) -> SpotTrade | TradeRequest | ControlRequest | EconomicControl:
    """Validate a payload that arrived on the topic for `topic_type`."""
    try:
        data: Any = json.loads(payload)
    except UnicodeDecodeError:
        raise MessageRejected("payload is not UTF-8") from None
    except ValueError as exc:
        raise MessageRejected(f"payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MessageRejected("payload must be a JSON object")
    if data.get("type") != topic_type:
        raise MessageRejected(
            f"field 'type' must be {topic_type!r} on this topic (got {data.get('type')!r})"
        )
    try:
        if topic_type == "spot_trade":
            spot = SpotTradeMsg.model_validate(data)
            return SpotTrade(
                id=spot.id,
                asset=spot.asset,
                slot_start=to_ts(spot.slot_start),
                energy_kwh=spot.energy_kwh,
                side=spot.side,
                rate_ct_per_kwh=spot.rate_ct_per_kwh,
            )
        if topic_type == "balancing_trade":
            trade = BalancingTradeMsg.model_validate(data)
            return TradeRequest(
                id=trade.id,
                offer_id=trade.offer_id,
                asset=trade.asset,
                slot_start=to_ts(trade.slot_start),
                energy_kwh=trade.energy_kwh,
                price_ct=trade.price_ct,
            )
        if topic_type == "economic_control":
            economic = EconomicControlMsg.model_validate(data)
            return EconomicControl(
                id=economic.id,
                tariff_id=economic.tariff_id,
                timeslot_start=to_ts(economic.timeslot_start),
                curtailment_ratio=economic.curtailment_ratio,
            )
        control = BalancingControlMsg.model_validate(data)
        return ControlRequest(
            id=control.id,
            tariff_id=control.tariff_id,
            timeslot_start=to_ts(control.timeslot_start),
            kwh=control.kwh,
            payment=control.payment,
        )
    except ValidationError as exc:
        raise MessageRejected(_reason(exc)) from None


def new_id() -> str:
    return uuid.uuid4().hex


def _envelope(kind: str, message_id: str, **fields: Any) -> dict[str, Any]:
    return {"v": VERSION, "type": kind, "id": message_id, **fields}


def ack(
    *,
    ref: str | None,
    ref_type: str | None,
    status: AckStatus,
    reason: str,
    commitment_id: str | None,
    accepted_kwh: float | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ref": ref,
        "ref_type": ref_type,
        "status": status.value,
        "reason": reason,
        "commitment_id": commitment_id,
    }
    if accepted_kwh is not None:
        fields["accepted_kwh"] = accepted_kwh
    return _envelope("ack", new_id(), **fields)


def balancing_offer(offer: Offer) -> dict[str, Any]:
    return _envelope(
        "balancing_offer",
        offer.id,
        asset=offer.asset,
        slot_start=iso(offer.slot_start),
        slot_end=iso(offer.slot_end),
        energy_kwh=offer.energy_kwh,
        rate_ct_per_kwh=offer.rate_ct_per_kwh,
        price_ct=offer.price_ct,
    )


def balancing_order(
    tariff_id: str, exercise_ratio: float, price_per_kwh: float, message_id: str
) -> dict[str, Any]:
    return _envelope(
        "balancing_order",
        message_id,
        tariff_id=tariff_id,
        exercise_ratio=exercise_ratio,
        price_per_kwh=price_per_kwh,
    )


def delivery_report(report: DeliveryReport) -> dict[str, Any]:
    return _envelope(
        "delivery_report",
        f"dr-{report.commitment_id}",
        commitment_id=report.commitment_id,
        ref=report.ref,
        ref_type=report.ref_type,
        window_start=iso(report.window_start),
        window_end=iso(report.window_end),
        requested_kwh=report.requested_kwh,
        accepted_kwh=report.accepted_kwh,
        delivered_kwh=report.delivered_kwh,
        status=report.status,
        coverage=report.coverage,
        settlement=report.settlement,
        assets=[
            {"asset": a.asset, "baseline_kw": a.baseline_kw, "delivered_kwh": a.delivered_kwh}
            for a in report.assets
        ],
    )


def measurement(
    site: str, asset: str, slot_start: float, energy_kwh: float, coverage: float
) -> dict[str, Any]:
    """Metered energy of one asset in one slot, against its baseline; the id is stable."""
    stamp = datetime.fromtimestamp(slot_start, UTC).strftime("%Y%m%dT%H%M%SZ")
    return _envelope(
        "measurement",
        f"ms-{site}.{asset}.{stamp}",
        asset=asset,
        slot_start=iso(slot_start),
        energy_kwh=round(energy_kwh, 6),
        coverage=round(coverage, 4),
    )


def status(state: str, assets: dict[str, dict[str, Any]], ts: float) -> dict[str, Any]:
    return _envelope("status", new_id(), state=state, ts=iso(ts), assets=assets)


def telemetry(readings: dict[str, dict[str, Any]], ts: float) -> dict[str, Any]:
    return _envelope("telemetry", new_id(), ts=iso(ts), assets=readings)


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")
