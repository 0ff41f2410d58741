"""MqttLink: one MQTT v5 connection, as the asyncio loop sees it (the delivery contract is
in the package docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from flexedge.errors import BrokerError
from flexedge.mqtt.broker_address import Broker, BrokerTls
from flexedge.mqtt.messages import Inbound, Message
from flexedge.mqtt.paho_bridge import LinkEvents, PahoBridge, new_properties

log = logging.getLogger(__name__)


class MqttLink:
    """One MQTT v5 connection with automatic reconnect, manual acks and remembered
    subscriptions. Use it from a single asyncio loop; callbacks run on that loop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        tls: BrokerTls | None = None,
        will: Message | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        session_expiry: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        # Called with the paho mid when the broker acknowledges a publish (PUBACK for QoS 1).
        # It runs on the loop, after the publish() call that returned that mid has returned.
        self.on_published = on_published
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self._started = False
        self._stopped = False
        # Loop-side view of the connection: True between our on_connect and on_disconnect.
        self._up = False
        self._subscriptions: dict[str, int] = {}
        self._pending_subacks: dict[int, list[str]] = {}
        self._granted: set[str] = set()
        self._refused: dict[str, str] = {}
        self._subs_changed = asyncio.Event()
        self._mid_waiters: dict[int, asyncio.Future[None]] = {}
        # Why the last connect attempt failed, for the error when no CONNACK comes.
        self._last_failure: str | None = None
        self._bridge = PahoBridge(
            client_id=client_id,
            host=host,
            port=port,
            username=username,
            password=password,
            will=will,
            tls=tls,
            events=LinkEvents(
                connected=self._connected,
                refused_connect=self._refused_connect,
                failed_connect=self._failed_connect,
                disconnected=self._disconnected,
                subacked=self._subacked,
                published=self._published,
                received=self._received,
            ),
        )
        self._client = self._bridge.client

    @classmethod
    def for_broker(
        cls,
        broker: Broker,
        *,
        client_id: str,
        will: Message | None = None,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        session_expiry: int = 0,
    ) -> MqttLink:
        """A link to `broker` with its login, keepalive and TLS: how every flexedge command
        connects, so that none of them can leave one of these out."""
        return cls(
            host=broker.host,
            port=broker.port,
            client_id=client_id,
            username=broker.username,
            password=broker.password,
            keepalive=broker.keepalive,
            tls=broker.tls,
            will=will,
            on_connect=on_connect,
            on_disconnect=on_disconnect,
            on_published=on_published,
            session_expiry=session_expiry,
        )

    # ---- public API (call on the asyncio loop) -------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    async def start(
        self, loop: asyncio.AbstractEventLoop | None = None, wait: float = 10.0
    ) -> None:
        """Connect; return after the first CONNACK, or raise BrokerError after `wait` s.
        Reconnects on its own afterwards."""
        if self._started:
            raise BrokerError(f"mqtt link {self.client_id} already started")
        self._started = True
        self._loop = loop or asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._bridge.loop = self._loop
        props: Properties | None = None
        if self.session_expiry > 0:
            props = new_properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        try:
            self._client.connect_async(
                self.host,
                self.port,
                keepalive=self.keepalive,
                # A persistent session is only useful if we resume it, also after a restart.
                clean_start=self.session_expiry == 0,
                properties=props,
            )
        except ValueError as exc:
            raise BrokerError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), wait)
        except TimeoutError:
            await self._shutdown()
            last = f"; last attempt: {self._last_failure}" if self._last_failure else ""
            raise BrokerError(
                f"no CONNACK from {self.host}:{self.port} within {wait:g} s "
                f"(broker down or unreachable?){last}"
            ) from None
        except BrokerError:
            await self._shutdown()
            raise

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Subscribe now if connected, and again after every reconnect."""
        self._subscriptions[topic_filter] = qos
        self._refused.pop(topic_filter, None)
        self._granted.discard(topic_filter)
        if self._up:
            self._send_subscribe(topic_filter, qos)

    async def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the broker has granted every subscription on the current connection.
        Publish requests only after this, or their responses may be missed."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    refused = {f: r for f, r in self._refused.items() if f in self._subscriptions}
                    if refused:
                        raise BrokerError(f"broker refused subscriptions: {refused}")
                    if self._up and self._granted >= self._subscriptions.keys():
                        return
                    self._subs_changed.clear()
                    await self._subs_changed.wait()
        except TimeoutError:
            missing = sorted(self._subscriptions.keys() - self._granted)
            raise BrokerError(f"no SUBACK within {timeout:g} s for {missing}") from None

    def ack(self, msg: Inbound) -> None:
        """Tell the broker `msg` is safely stored (PUBACK for QoS 1, PUBCOMP for QoS 2)."""
        if msg.qos == 0:
            return
        rc = self._bridge.ack_if_current(msg)
        if rc is None:
            # The connection it came on is gone; the same mid may now name another
            # message. The broker redelivers this one if our session survived.
            log.debug("not acking mid %s from an earlier connection", msg.mid)
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BrokerError(f"ack of mid {msg.mid} failed: {paho.error_string(rc)}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> int | None:
        """Send a message; return paho's mid, or None when not connected (nothing queued)."""
        if not self._client.is_connected():
            return None
        props: Properties | None = None
        if response_topic is not None or correlation_data is not None:
            props = new_properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation_data is not None:
                props.CorrelationData = correlation_data
        try:
            info = self._client.publish(topic, payload, qos, retain, properties=props)
        except ValueError as exc:
            raise BrokerError(f"cannot publish to {topic!r}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return info.mid
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Lost between the check and the send. paho keeps a QoS 1 message and may still
            # deliver it after reconnecting; the caller re-publishes anyway (at-least-once).
            return None
        raise BrokerError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")

    async def stop(self, final: Message | None = None, timeout: float = 2.0) -> None:
        """Optionally publish `final` (e.g. retained "offline") and wait up to `timeout` s
        for its PUBACK, then disconnect cleanly (so the broker does not send our will)."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        if final is not None:
            topic, payload, qos, retain = final
            mid = self.publish(topic, payload, qos, retain)
            if mid is not None and qos > 0:
                await self.wait_published(mid, timeout)
        await self._shutdown()

    async def wait_published(self, mid: int, timeout: float) -> bool:
        """Wait until the broker acknowledged `mid`; False on timeout. Call it right after
        publish(), before yielding to the loop, or the acknowledgement may be missed."""
        assert self._loop is not None, "start() first"
        waiter = self._mid_waiters.setdefault(mid, self._loop.create_future())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            log.warning("mid %s not acknowledged within %s s", mid, timeout)
            return False
        finally:
            self._mid_waiters.pop(mid, None)

    # ---- internals ------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._client.disconnect()
        # loop_stop joins paho's thread, which may be sleeping up to 1 s between reconnects.
        await asyncio.to_thread(self._client.loop_stop)
        self._up = False

    def _send_subscribe(self, topic_filter: str, qos: int) -> None:
        # RETAIN_SEND_IF_NEW_SUB: re-subscribing a filter the resumed session already holds
        # must not replay retained messages we have already seen.
        options = SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        try:
            rc, mid = self._client.subscribe(topic_filter, options=options)
        except ValueError as exc:
            raise BrokerError(f"cannot subscribe to {topic_filter!r}: {exc}") from exc
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subacks[mid] = [topic_filter]
        else:
            # Not connected after all: the next on_connect subscribes again.
            log.debug("subscribe %s deferred: %s", topic_filter, paho.error_string(rc))

    def _run_user(self, callback: Callable[[], None] | None, name: str) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("mqtt %s callback of %s failed", name, self.client_id)

    def _connected(self, session_present: bool) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        self._up = True
        self._granted.clear()
        self._pending_subacks.clear()
        self._last_failure = None
        log.info(
            "mqtt %s connected to %s:%s%s (session present: %s)",
            self.client_id,
            self.host,
            self.port,
            " over TLS" if self._bridge.tls else "",
            session_present,
        )
        for topic_filter, qos in self._subscriptions.items():
            self._send_subscribe(topic_filter, qos)
        self._subs_changed.set()
        self._run_user(self.on_connect, "on_connect")

    def _refused_connect(self, reason: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                BrokerError(f"{self.host}:{self.port} refused the connection: {reason}")
            )

    def _failed_connect(self, reason: str, handshake: bool) -> None:
        repeated = reason == self._last_failure
        self._last_failure = reason
        if not handshake:
            return
        if self._ready is not None and not self._ready.done():
            # A certificate that is refused now is refused on every retry: say so at once
            # instead of after the whole wait.
            self._ready.set_exception(
                BrokerError(f"cannot connect to {self.host}:{self.port}: {reason}")
            )
        elif not repeated:
            # Later (a broker whose certificate changed under a running daemon) paho keeps
            # retrying, as after any lost connection; once per reason is enough to tell.
            log.warning("mqtt %s: %s", self.client_id, reason)

    def _disconnected(self, reason: str) -> None:
        was_up = self._up
        self._up = False
        self._granted.clear()
        self._pending_subacks.clear()
        self._subs_changed.set()
        if was_up:
            level = logging.INFO if self._stopped else logging.WARNING
            log.log(level, "mqtt %s disconnected: %s", self.client_id, reason)
            self._run_user(self.on_disconnect, "on_disconnect")

    def _subacked(self, mid: int, reasons: list[str | None]) -> None:
        filters = self._pending_subacks.pop(mid, [])
        for topic_filter, refusal in zip(filters, reasons, strict=False):
            if refusal is None:
                self._granted.add(topic_filter)
            else:
                log.error("broker refused subscription %s: %s", topic_filter, refusal)
                self._refused[topic_filter] = refusal
        self._subs_changed.set()

    def _published(self, mid: int) -> None:
        waiter = self._mid_waiters.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.on_published is not None:
            try:
                self.on_published(mid)
            except Exception:
                log.exception("mqtt on_published callback of %s failed", self.client_id)

    def _received(self, inbound: Inbound) -> None:
        # Unbounded on purpose: the broker sends at most its in-flight window of unacked
        # QoS 1 messages, so back-pressure comes from ack(), not from this queue.
        self.inbound.put_nowait(inbound)
