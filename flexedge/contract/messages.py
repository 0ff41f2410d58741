"""Wire contract v1 as code: one pydantic model per message a site receives or sends.

Topics are relative to `{prefix}/{site}/`. Every market message carries `"v": 1`, its `"type"`
and a unique `"id"`; times are ISO 8601 text (UTC with milliseconds and a Z when the site writes
them), energy is kWh, power kW, rates ct/kWh. Inbound models are strict (JSON numbers only, the
integer 1 for `v`, time text with an offset, finite numbers) and ignore fields they do not know,
so the contract can grow without breaking older sites. Outbound models forbid unknown fields and
keep every value as the daemon computed it (an int stays an int), so dumping one gives exactly
the payload the site has always sent. Only pydantic and the standard library are imported here:
every layer may use this module. `python -m flexedge.contract.schema` writes the JSON Schema.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    field_validator,
)

VERSION = 1
MessageId = Annotated[str, Field(min_length=1, max_length=200)]
REASON_CHARS = 500  # the longest reason an ack carries


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z."""
    return wire_time(datetime.fromtimestamp(ts, UTC))


def wire_time(moment: datetime) -> str:
    """How the site writes a time: UTC, milliseconds, a Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def moment(ts: float) -> datetime:
    """Epoch seconds (the core's time) as the aware datetime a model field holds."""
    return datetime.fromtimestamp(ts, UTC)


# A time field: ISO 8601 text with an offset on the wire, an aware datetime in Python.
WireTime = Annotated[AwareDatetime, PlainSerializer(wire_time, return_type=str, when_used="json")]
# An outbound number: kept as int or float exactly as computed; bools are refused.
Number = Annotated[StrictFloat | StrictInt, WithJsonSchema({"type": "number"})]


# -- inbound: market -> site ----------------------------------------------------------------


def _envelope_required(schema: dict[str, JsonValue]) -> None:
    # `type` has a default so that a market can build a message without repeating it; on
    # the wire it is required like `v` and `id` (the parser checks it against the topic).
    required = schema.get("required")
    if isinstance(required, list) and "type" not in required:
        required.insert(1, "type")


class Inbound(BaseModel):
    """The envelope of every market message a site accepts."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra=_envelope_required)

    v: Literal[1] = Field(description="contract version: the JSON integer 1")
    type: str
    id: MessageId = Field(description="unique per message; a reused id is acked duplicate")

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
        # The contract says ISO 8601 text; pydantic would also take epoch numbers. A datetime
        # can only come from Python (a market building the message), never from JSON.
        if not isinstance(value, str | datetime):
            raise ValueError("must be an ISO 8601 time string with a UTC offset")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class SpotTradeMsg(Inbound):
    """D3A: the asset bought or sold energy on the spot market in a slot."""

    type: Literal["spot_trade"] = "spot_trade"
    asset: MessageId = Field(description="a registered asset")
    slot_start: WireTime
    energy_kwh: StrictFloat = Field(gt=0, description="kWh traded, > 0")
    side: Literal["buy", "sell"]
    rate_ct_per_kwh: StrictFloat


class BalancingTradeMsg(Inbound):
    """D3A: the market cleared (part of) one of the site's balancing offers."""

    type: Literal["balancing_trade"] = "balancing_trade"
    offer_id: MessageId = Field(description="id of a live balancing_offer of this site")
    asset: MessageId
    slot_start: WireTime
    energy_kwh: StrictFloat = Field(description="kWh, the offer's sign, at most what is left")
    price_ct: StrictFloat = Field(description="ct, pay-as-offer: rate x |energy_kwh|")
    residual_offer_id: MessageId | None = Field(
        default=None,
        description="optional: the new id the market gave the rest of the offer it did not "
        "take (gsy-e); later trades may name it, on what is left of the same offer",
    )


class BalancingControlMsg(Inbound):
    """Power TAC: the utility exercises the tariff's standing balancing orders."""

    type: Literal["balancing_control"] = "balancing_control"
    tariff_id: MessageId
    timeslot_start: WireTime
    kwh: StrictFloat = Field(description="kWh, > 0 up-regulation, < 0 down")
    payment: StrictFloat


class EconomicControlMsg(Inbound):
    """Power TAC: curtail the tariff's curtailable loads by a ratio for a timeslot, unpaid."""

    type: Literal["economic_control"] = "economic_control"
    tariff_id: MessageId
    timeslot_start: WireTime
    curtailment_ratio: StrictFloat = Field(ge=0.0, le=1.0)


InboundMessage = SpotTradeMsg | BalancingTradeMsg | BalancingControlMsg | EconomicControlMsg

# Inbound topic (relative to {prefix}/{site}/) -> the model of the message it carries.
INBOUND_MODELS: dict[str, type[InboundMessage]] = {
    "market/spot-trade": SpotTradeMsg,
    "market/balancing-trade": BalancingTradeMsg,
    "market/balancing-control": BalancingControlMsg,
    "market/economic-control": EconomicControlMsg,
}


# -- outbound: site -> market ---------------------------------------------------------------


class Outbound(BaseModel):
    """The envelope of every market message a site sends."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )

    v: Literal[1] = 1
    type: str
    id: str = Field(min_length=1)


class Ack(Outbound):
    """Exactly one per inbound message, valid or not."""

    type: Literal["ack"] = "ack"
    ref: str | None = Field(max_length=200, description="the inbound id, escaped if unusable")
    ref_type: str | None = Field(description="the inbound type its topic carries")
    status: Literal["accepted", "clipped", "rejected", "duplicate"]
    reason: str = Field(max_length=REASON_CHARS, description="why not accepted; may be empty")
    commitment_id: str | None
    # An addition to v1: sent only when the message became a commitment.
    accepted_kwh: Annotated[Number | None, WithJsonSchema({"type": "number"})] = Field(
        default=None, exclude_if=lambda value: value is None, description="kWh committed"
    )


class BalancingOffer(Outbound):
    """D3A: what one asset can deliver in a slot; `id` is `site.asset.slotstart.side`."""

    type: Literal["balancing_offer"] = "balancing_offer"
    asset: str
    slot_start: WireTime
    slot_end: WireTime
    energy_kwh: Number = Field(description="kWh, > 0 supply (up), < 0 demand (down)")
    rate_ct_per_kwh: Number
    price_ct: Number = Field(description="ct, rate x |energy_kwh|")


class BalancingOrder(Outbound):
    """Power TAC: one of the tariff's standing orders (one up, one down), retained on the
    topic of its direction, in force until replaced by an order of that direction."""

    type: Literal["balancing_order"] = "balancing_order"
    tariff_id: str
    exercise_ratio: Number = Field(description="(0, 2] on .../up, [-1, 0) on .../down")
    price_per_kwh: Number


class AssetDeliveryMsg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: str
    baseline_kw: Number
    delivered_kwh: Number


class DeliveryReportMsg(Outbound):
    """One per commitment once its window is over and metered; `id` is `dr-{commitment_id}`."""

    type: Literal["delivery_report"] = "delivery_report"
    commitment_id: str
    ref: str = Field(description="id of the inbound message that made the commitment")
    ref_type: str
    window_start: WireTime
    window_end: WireTime
    requested_kwh: Number
    accepted_kwh: Number
    delivered_kwh: Number
    status: Literal["delivered", "partial", "failed"]
    coverage: Number = Field(description="share of the window covered by telemetry, 0..1")
    # An addition to v1: the pay-as-offer value of what was delivered.
    settlement: Number
    assets: list[AssetDeliveryMsg]
    reason: str = Field(default="", description="why it ended before its window; empty if not")


class Measurement(Outbound):
    """Metered energy of one asset in one slot; `id` is `ms-site.asset.slotstart`."""

    type: Literal["measurement"] = "measurement"
    asset: str
    slot_start: WireTime
    energy_kwh: Number = Field(description="kWh against the baseline, 6 decimals")
    coverage: Number = Field(description="share of the slot covered by telemetry, 4 decimals")


class AssetSummary(BaseModel):
    """One asset as status and telemetry show it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_kw: Number | None = Field(description="measured kW, > 0 injection; null before a reading")
    soc: Number | None = Field(description="state of charge 0..1; null for other kinds")
    available: bool = Field(description="fresh telemetry and not marked unavailable")
    setpoint_kw: Number | None = Field(description="the last setpoint written; null: released")


SiteState = Literal["starting", "online", "degraded", "paused", "safe", "offline"]
PROBLEMS = "why the site is degraded (empty: it is not)"


class Status(Outbound):
    """Retained; the broker publishes state offline as the site's last will. Degraded: the
    site runs, but something it promises is at risk (its log cannot be written)."""

    type: Literal["status"] = "status"
    state: SiteState
    ts: WireTime
    assets: dict[str, AssetSummary]
    problems: list[str] = Field(default_factory=list, description=PROBLEMS)


class Telemetry(Outbound):
    """Every control period, QoS 0."""

    type: Literal["telemetry"] = "telemetry"
    ts: WireTime
    assets: dict[str, AssetSummary]


OutboundMessage = (
    Ack | BalancingOffer | BalancingOrder | DeliveryReportMsg | Measurement | Status | Telemetry
)


# -- operator commands: cmd/{command}, MQTT v5 request/response --------------------------------


class CommitmentSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    ref_type: str
    window_start: WireTime
    window_end: WireTime
    accepted_kwh: Number
    delivered_kwh: Number


class OrderSummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tariff_id: str
    direction: Literal["up", "down"]
    exercise_ratio: Number
    price_per_kwh: Number


class HoldSummary(BaseModel):
    """A manual setpoint the operator holds a device at (`flexedge hold`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str
    kw: Number | None = Field(description="site sign: > 0 injection; null: not written")
    until: WireTime = Field(description="when the hold ends by itself")


class SetOrderRequest(BaseModel):
    """`cmd/set-order`: a new order for a tariff, replacing only the order of its direction
    (the sign of `exercise_ratio`), or `withdraw` of the order of one direction."""

    model_config = ConfigDict(extra="forbid")

    tariff_id: str = Field(min_length=1)
    exercise_ratio: StrictFloat | None = Field(
        default=None, allow_inf_nan=False, description="(0, 2] up, [-1, 0) down"
    )
    price_per_kwh: StrictFloat | None = Field(
        default=None, allow_inf_nan=False, description="default: the direction's current price"
    )
    direction: Literal["up", "down"] | None = Field(
        default=None, description="if given, exercise_ratio must be of this direction"
    )
    withdraw: Literal["up", "down"] | None = Field(
        default=None, description="clear the order of this direction (no exercise_ratio)"
    )


class SetOrderReply(BaseModel):
    """The tariff's order of one direction as configured now (null: withdrawn), and what is
    in force for the tariff (cut to what the assets can do)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: Literal[True]
    tariff_id: str
    direction: Literal["up", "down"]
    exercise_ratio: Number | None = Field(description="null: the order was withdrawn")
    price_per_kwh: Number | None
    published_ratio: Number | None = Field(description="null: no order of it in force")
    orders: list[OrderSummary] = Field(description="the tariff's orders in force now")


class StatusReply(BaseModel):
    """`cmd/status` (any request body): what `flexedge status` shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: Literal[True]
    site: str
    state: SiteState
    problems: list[str] = Field(default_factory=list, description=PROBLEMS)
    ts: WireTime
    assets: dict[str, AssetSummary]
    open_commitments: list[CommitmentSummary]
    outbox_backlog: int | None = Field(
        description="messages not yet confirmed by the broker; null: the log cannot be read"
    )
    log_db: str = Field(description="path of the SQLite log")
    orders: list[OrderSummary] = Field(description="the standing orders in force")
    holds: list[HoldSummary] = Field(default_factory=list, description="manual setpoints")


class CommandRefused(BaseModel):
    """Any command that could not be done: an unknown command, a bad or refused request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: Literal[False]
    error: str


COMMAND_REPLIES: dict[str, type[StatusReply | SetOrderReply]] = {
    "status": StatusReply,
    "set-order": SetOrderReply,
}
