"""One MQTT v5 request and its response, over a link of its own (the CLI's status and
command helpers)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from flexedge.errors import BrokerError
from flexedge.mqtt.broker_address import Broker
from flexedge.mqtt.link import MqttLink

log = logging.getLogger(__name__)


class RequestTimeout(BrokerError, TimeoutError):
    """No response arrived in time for request()."""


async def request(
    broker: Broker, topic: str, payload: bytes, response_topic: str, timeout: float
) -> bytes:
    """Publish one request (MQTT v5 ResponseTopic + CorrelationData) and return the payload of
    the response carrying the same correlation data. Raises BrokerError if the broker cannot
    be reached and RequestTimeout if no response comes within `timeout` seconds overall."""
    correlation = uuid.uuid4().bytes
    link = MqttLink.for_broker(broker, client_id=f"flexedge-req-{correlation.hex()[:12]}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    await link.start(wait=timeout)
    try:
        async with asyncio.timeout_at(deadline):
            link.subscribe(response_topic, qos=1)
            # The overall deadline above fires first and becomes RequestTimeout.
            await link.wait_subscribed(timeout)
            mid = link.publish(
                topic, payload, qos=1, response_topic=response_topic, correlation_data=correlation
            )
            if mid is None:
                raise BrokerError(
                    f"lost the connection to {broker.host}:{broker.port} before the request"
                )
            while True:
                msg = await link.inbound.get()
                link.ack(msg)
                if msg.correlation_data == correlation:
                    return msg.payload
                log.debug("ignoring response on %s for another request", msg.topic)
    except TimeoutError:
        raise RequestTimeout(f"no response on {response_topic} within {timeout:g} s") from None
    finally:
        await link.stop()
