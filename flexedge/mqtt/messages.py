"""What crosses the MQTT link's API: an inbound message, and a message to publish."""

from __future__ import annotations

from dataclasses import dataclass, field

# (topic, payload, qos, retain): a last will, or the final message stop() publishes.
Message = tuple[str, bytes, int, bool]


@dataclass(frozen=True)
class Inbound:
    """One message from the broker. Pass it back to MqttLink.ack() once it is persisted."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    response_topic: str | None = None
    correlation_data: bytes | None = None
    # Which connection delivered it: a packet id is only meaningful on that connection, so
    # ack() drops acks for messages from an earlier one (the broker redelivers those).
    epoch: int = field(default=0, compare=False, repr=False)
