"""MqttLink over TLS against a Mosquitto with a TLS listener and certificates this test makes:
the broker's certificate is checked against the configured CA and the host dialled, a client
certificate is sent when one is given, and each refusal says why at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexedge.errors import BrokerError
from flexedge.mqtt import Broker, BrokerTls, MqttLink
from flexedge.tools.harness.broker import PrivateBroker, ServerTls
from flexedge.tools.harness.certificates import Pki, make_ca, make_cert, make_pki
from tests.support.harness import run

# Far below the link's start() wait: a refused certificate must not wait for it.
FAST_S = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[PrivateBroker]:
    tls = ServerTls(pki.server.cert_file, pki.server.key_file, pki.ca_file)
    with PrivateBroker(tls=tls) as broker:
        yield broker


def tls_to(broker: PrivateBroker, ca: Path, **options: object) -> Broker:
    return Broker(broker.host, broker.port, tls=BrokerTls(ca_file=str(ca), **options))  # type: ignore[arg-type]


async def round_trip(broker: Broker) -> bytes:
    """Connect, publish one message to ourselves and return it as received."""
    link = MqttLink.for_broker(broker, client_id=f"tls-{uuid.uuid4().hex[:8]}")
    await link.start(wait=30)
    try:
        topic = f"tls/{uuid.uuid4().hex}"
        link.subscribe(topic)
        await link.wait_subscribed()
        link.publish(topic, b"over tls")
        msg = await link.inbound.get()
        link.ack(msg)
        return msg.payload
    finally:
        await link.stop()


async def refusal(broker: Broker) -> str:
    """The BrokerError start() raises, after checking it came well within its wait."""
    link = MqttLink.for_broker(broker, client_id=f"tls-{uuid.uuid4().hex[:8]}")
    began = time.monotonic()
    with pytest.raises(BrokerError) as info:
        await link.start(wait=30)
    assert time.monotonic() - began < FAST_S, info.value
    return str(info.value)


def test_a_link_over_tls_with_the_brokers_ca(tls_broker: PrivateBroker, pki: Pki) -> None:
    assert run(lambda: round_trip(tls_to(tls_broker, pki.ca_file))) == b"over tls"


def test_another_ca_is_refused_at_once_and_says_why(
    tls_broker: PrivateBroker, tmp_path: Path
) -> None:
    other = make_ca(tmp_path, "some other CA")
    reason = run(lambda: refusal(tls_to(tls_broker, other.cert_file)))
    assert f"cannot connect to {tls_broker.host}:{tls_broker.port}" in reason
    assert "certificate was not accepted" in reason
    assert "mqtt.tls.ca_file" in reason


def test_tls_to_a_plain_listener_says_so(broker: PrivateBroker, pki: Pki) -> None:
    async def attempt() -> str:
        link = MqttLink.for_broker(tls_to(broker, pki.ca_file), client_id="tls-to-plain")
        with pytest.raises(BrokerError) as info:
            await link.start(wait=2)
        return str(info.value)

    # Mosquitto resets the connection, as a restarting broker would: not final, but said.
    reason = run(attempt)
    assert "no CONNACK" in reason
    assert "reset in the TLS handshake: is this port TLS?" in reason


def test_the_hostname_is_checked_unless_turned_off(pki: Pki, tmp_path: Path) -> None:
    # Signed by the right CA, but for another host than the one dialled.
    elsewhere = make_cert(pki.ca, tmp_path, "elsewhere", hosts=("broker.example",))
    with PrivateBroker(tls=ServerTls(elsewhere.cert_file, elsewhere.key_file, pki.ca_file)) as b:
        reason = run(lambda: refusal(tls_to(b, pki.ca_file)))
        assert "Hostname mismatch" in reason or "IP address mismatch" in reason
        unchecked = tls_to(b, pki.ca_file, check_hostname=False)
        assert run(lambda: round_trip(unchecked)) == b"over tls"


def test_a_broker_that_requires_a_client_certificate(pki: Pki) -> None:
    tls = ServerTls(pki.server.cert_file, pki.server.key_file, pki.ca_file, True)
    with PrivateBroker(tls=tls) as b:
        with_cert = tls_to(
            b,
            pki.ca_file,
            cert_file=str(pki.client.cert_file),
            key_file=str(pki.client.key_file),
        )
        assert run(lambda: round_trip(with_cert)) == b"over tls"
