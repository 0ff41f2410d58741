"""One MQTT connection per broker for every MQTT JSON device on it (mqtt_device).

A site with twenty plugs keeps one TCP connection and one client id: inbound state messages
are routed to each device by exact topic. The link is started by the first acquire() and
stopped by the last release().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from flexedge.errors import BrokerError
from flexedge.mqtt import Broker, MqttLink

log = logging.getLogger(__name__)

Handler = Callable[[bytes], None]


class SharedLink:
    """One MqttLink and the devices using it; inbound messages are routed by exact topic."""

    def __init__(self, key: tuple[asyncio.AbstractEventLoop, str, int], broker: Broker) -> None:
        self.key = key
        self.broker = broker
        self.users = 0
        self.routes: dict[str, list[Handler]] = {}
        self.link = self._new_link()
        self._lock = asyncio.Lock()
        self._router: asyncio.Task[None] | None = None

    def _new_link(self) -> MqttLink:
        return MqttLink.for_broker(self.broker, client_id=f"flexedge-dev-{uuid.uuid4().hex[:8]}")

    async def ensure_started(self, wait: float) -> None:
        async with self._lock:
            if self._router is not None:
                return
            try:
                await self.link.start(wait=wait)
            except BrokerError:
                # An MqttLink starts once; the next connect() tries with a fresh one.
                self.link = self._new_link()
                raise
            self._router = asyncio.create_task(self._route(), name=f"mqtt-devices-{self.key[1:]}")

    async def stop(self) -> None:
        router, self._router = self._router, None
        if router is None:
            return
        router.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await router
        await self.link.stop()

    async def _route(self) -> None:
        while True:
            msg = await self.link.inbound.get()
            # Telemetry: nothing to persist, and the next message supersedes this one.
            self.link.ack(msg)
            if msg.retain:
                # Sent because we subscribed, so of unknown age: it must not look fresh.
                log.debug("ignoring retained state on %s", msg.topic)
                continue
            for handler in tuple(self.routes.get(msg.topic, ())):
                try:
                    handler(msg.payload)
                except Exception:
                    log.exception("state message on %s failed", msg.topic)


# Per event loop: an MqttLink delivers its messages to the loop that started it.
_links: dict[tuple[asyncio.AbstractEventLoop, str, int], SharedLink] = {}


async def acquire(broker: Broker, wait: float) -> SharedLink:
    key = (asyncio.get_running_loop(), broker.host, broker.port)
    shared = _links.get(key)
    if shared is None:
        shared = _links[key] = SharedLink(key, broker)
    shared.users += 1
    try:
        await shared.ensure_started(wait)
    except BaseException:
        await release(shared)
        raise
    return shared


async def release(shared: SharedLink) -> None:
    shared.users -= 1
    if shared.users > 0:
        return
    if _links.get(shared.key) is shared:
        del _links[shared.key]
    await shared.stop()
