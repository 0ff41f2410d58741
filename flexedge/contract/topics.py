"""The topic table of the wire contract: every topic below `{prefix}/{site}/`, its direction,
QoS, whether it is retained, and the model of what it carries. The daemon subscribes and
publishes by it; the generated schema lists it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from flexedge.contract.messages import (
    INBOUND_MODELS,
    Ack,
    BalancingOffer,
    BalancingOrder,
    DeliveryReportMsg,
    Measurement,
    SetOrderRequest,
    Status,
    Telemetry,
)
from flexedge.contract.operator import HoldRequest, ReleaseRequest, ReportsRequest


@dataclass(frozen=True)
class Topic:
    """One topic of the contract, relative to `{prefix}/{site}/`."""

    suffix: str
    inbound: bool
    model: type[BaseModel]
    qos: int = 1
    retained: bool = False


TOPICS: tuple[Topic, ...] = (
    *(Topic(suffix, True, model) for suffix, model in INBOUND_MODELS.items()),
    Topic("market/ack", False, Ack),
    Topic("market/balancing-offer", False, BalancingOffer),
    Topic("market/balancing-order/{tariff_id}/up", False, BalancingOrder, retained=True),
    Topic("market/balancing-order/{tariff_id}/down", False, BalancingOrder, retained=True),
    Topic("market/delivery", False, DeliveryReportMsg),
    Topic("market/measurement", False, Measurement),
    Topic("status", False, Status, retained=True),
    Topic("telemetry", False, Telemetry, qos=0),
    Topic("cmd/set-order", True, SetOrderRequest),
    Topic("cmd/hold", True, HoldRequest),
    Topic("cmd/release", True, ReleaseRequest),
    Topic("cmd/reports", True, ReportsRequest),
)
