"""paho's side of an MqttLink: the paho client, and its callbacks on paho's network thread.

Every callback only takes what it needs from paho's objects and hands it to the asyncio loop
with call_soon_threadsafe; the link's state is touched on the loop alone. The one piece of
state both threads share is the connection epoch, under a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from flexedge.errors import BrokerError
from flexedge.mqtt.broker_address import BrokerTls
from flexedge.mqtt.messages import Inbound, Message

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")


def _drop_paho_noise(record: logging.LogRecord) -> bool:
    # paho 2.2 logs this at ERROR on every clean disconnect (its loop runs once more after
    # the socket is closed); it is not an error and would drown out the real ones.
    return not str(record.msg).startswith("Client is not connected. Socket: None")


_paho_log.addFilter(_drop_paho_noise)


def new_properties(packet_type: int) -> Properties:
    # paho's Properties.__init__ is the one unannotated piece of its API we use.
    return Properties(packet_type)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class LinkEvents:
    """What the link does on the asyncio loop when paho reports an event."""

    connected: Callable[[bool], None]  # session present
    refused_connect: Callable[[str], None]  # reason
    # A connect that failed (reason, and whether it was the TLS handshake: a CA or
    # certificate that is wrong stays wrong, an unreachable broker may come back).
    failed_connect: Callable[[str, bool], None]
    disconnected: Callable[[str], None]  # reason
    subacked: Callable[[int, list[str | None]], None]  # mid, refusal per filter (None: granted)
    published: Callable[[int], None]  # mid
    received: Callable[[Inbound], None]


class PahoBridge:
    """One paho client set up for flexedge, reporting its events to `events` on `loop`."""

    def __init__(
        self,
        *,
        client_id: str,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        will: Message | None,
        events: LinkEvents,
        tls: BrokerTls | None = None,
    ) -> None:
        self.client_id = client_id
        self.host = host
        self.port = port
        self.events = events
        self.tls = tls is not None
        # Set by the link's start(): the loop the events are handed to.
        self.loop: asyncio.AbstractEventLoop | None = None
        # The epoch changes on every connect and disconnect (paho thread); the lock makes
        # ack()'s "same connection?" check and its PUBACK one step.
        self._epoch = 0
        self._epoch_lock = threading.Lock()

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.enable_logger(_paho_log)
        # An exception escaping a callback would kill paho's thread, and with it reconnects.
        client.suppress_exceptions = True
        client.max_inflight_messages_set(1000)
        # paho annotates the delays as int but sleeps for them, so fractions work.
        client.reconnect_delay_set(min_delay=0.2, max_delay=5)  # type: ignore[arg-type]
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            _set_tls(client, tls, f"{host}:{port}")
        if will is not None:
            topic, payload, qos, retain = will
            client.will_set(topic, payload, qos, retain)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self.client = client

    def ack_if_current(self, msg: Inbound) -> MQTTErrorCode | None:
        """Acknowledge `msg` if the connection it came on is still the current one; None if
        it is gone (the same mid may now name another message)."""
        with self._epoch_lock:
            if msg.epoch != self._epoch:
                return None
            return self.client.ack(msg.mid, msg.qos)

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        """Run fn(*args) on the asyncio loop (we are on paho's thread)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop closed under us, and nobody is left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    # ---- paho callbacks (paho's network thread) ------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("mqtt %s: CONNACK refused: %s", self.client_id, reason_code)
            self._call(self.events.refused_connect, str(reason_code))
            return
        with self._epoch_lock:
            self._epoch += 1
        self._call(self.events.connected, flags.session_present)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, and passes no exception: the
        # one being handled is the reason.
        exc = sys.exc_info()[1]
        reason = _failure_reason(exc, self.tls)
        log.debug(
            "mqtt %s: cannot connect to %s:%s (%s), retrying",
            self.client_id,
            self.host,
            self.port,
            reason,
        )
        self._call(self.events.failed_connect, reason, isinstance(exc, ssl.SSLError))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._epoch_lock:
            self._epoch += 1
        self._call(self.events.disconnected, str(reason_code))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # Nobody can route it; ack so the broker does not redeliver it forever.
            log.warning("mqtt %s: dropping message with a non-UTF-8 topic", self.client_id)
            if message.qos > 0:
                client.ack(message.mid, message.qos)
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None)
        correlation_data = getattr(props, "CorrelationData", None)
        inbound = Inbound(
            topic=topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            mid=message.mid,
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation_data) if correlation_data is not None else None,
            epoch=self._epoch,
        )
        self._call(self.events.received, inbound)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # Retrying would be refused again (e.g. not authorised): report and move on.
            log.error(
                "mqtt %s: broker refused publish mid %s: %s", self.client_id, mid, reason_code
            )
        self._call(self.events.published, mid)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        reasons = [str(rc) if rc.is_failure else None for rc in reason_codes]
        self._call(self.events.subacked, mid, reasons)


def _set_tls(client: paho.Client, tls: BrokerTls, where: str) -> None:
    """TLS on `client`: the broker's certificate always verified, its hostname unless
    check_hostname is off. Unreadable or malformed files are a BrokerError."""
    try:
        client.tls_set(
            ca_certs=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise BrokerError(f"cannot set up TLS to {where}: {exc}") from exc
    if not tls.check_hostname:
        client.tls_insecure_set(True)


def _failure_reason(exc: BaseException | None, tls: bool) -> str:
    """Why a connect failed, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the broker's certificate was not accepted ({exc.verify_message}); "
            "is mqtt.tls.ca_file the CA that signed it, and does it name this host?"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake failed ({exc.reason or exc}); is this port the broker's TLS listener?"
        )
    if tls and isinstance(exc, ConnectionResetError):
        # Mosquitto's plain listener drops a TLS ClientHello as a malformed packet. Not taken
        # as final: a broker in the middle of a restart resets connections too.
        return f"{exc}; the connection was reset in the TLS handshake: is this port TLS?"
    return str(exc) if exc is not None else "unknown reason"
