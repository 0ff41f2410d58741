"""MqttLink against a real Mosquitto (no mocks): delivery, acks, will, retain, reconnect."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from flexedge.errors import BrokerError
from flexedge.mqtt import Broker, Inbound, Message, MqttLink, RequestTimeout, request
from flexedge.tools.harness.broker import PrivateBroker, free_port
from tests.support.harness import run

REPO = Path(__file__).resolve().parents[2]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def link(
    broker: PrivateBroker,
    name: str,
    *,
    will: Message | None = None,
    on_connect: Callable[[], None] | None = None,
    on_disconnect: Callable[[], None] | None = None,
    on_published: Callable[[int], None] | None = None,
) -> MqttLink:
    return MqttLink(
        host=broker.host,
        port=broker.port,
        client_id=uid(name),
        will=will,
        on_connect=on_connect,
        on_disconnect=on_disconnect,
        on_published=on_published,
    )


async def next_message(lnk: MqttLink, timeout: float = 5.0) -> Inbound:
    return await asyncio.wait_for(lnk.inbound.get(), timeout)


async def no_message(lnk: MqttLink, within: float) -> bool:
    try:
        await asyncio.wait_for(lnk.inbound.get(), within)
    except TimeoutError:
        return True
    return False


def test_round_trip_between_two_links(broker: PrivateBroker) -> None:
    topic = uid("rt")

    async def scenario() -> None:
        sub, pub = link(broker, "sub"), link(broker, "pub")
        await sub.start()
        await pub.start()
        sub.subscribe(f"{topic}/#")
        await sub.wait_subscribed()
        assert pub.publish(f"{topic}/a", b"hello", qos=1) is not None
        msg = await next_message(sub)
        assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"{topic}/a", b"hello", 1, False)
        sub.ack(msg)
        # Acked, so the broker must not send it again.
        assert await no_message(sub, 0.3)
        await pub.stop()
        await sub.stop()

    run(scenario)


def test_on_published_fires_with_the_publish_mid(broker: PrivateBroker) -> None:
    async def scenario() -> None:
        acked: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        pub = link(
            broker,
            "pub",
            on_published=lambda mid: acked.put_nowait((mid, threading.get_ident())),
        )
        await pub.start()
        mids = {pub.publish(uid("puback"), b"x", qos=1) for _ in range(5)}
        assert None not in mids
        seen = [await asyncio.wait_for(acked.get(), 5) for _ in range(5)]
        assert {mid for mid, _ in seen} == mids
        # It runs on the asyncio loop's thread, never on paho's network thread.
        assert {thread for _, thread in seen} == {threading.get_ident()}
        await pub.stop()

    run(scenario)


def test_publish_returns_none_when_not_connected(broker: PrivateBroker) -> None:
    async def scenario() -> None:
        pub = link(broker, "pub")
        assert not pub.connected
        assert pub.publish("never/sent", b"x") is None  # before start
        await pub.start()
        assert pub.connected
        await pub.stop()
        assert not pub.connected
        assert pub.publish("never/sent", b"x") is None  # after stop

    run(scenario)


def test_start_raises_broker_error_when_nothing_listens() -> None:
    async def scenario() -> None:
        lonely = MqttLink(host="127.0.0.1", port=free_port(), client_id=uid("lonely"))
        with pytest.raises(BrokerError, match="no CONNACK"):
            await lonely.start(wait=0.5)

    run(scenario)


def test_unacked_message_is_redelivered_to_a_persistent_session(broker: PrivateBroker) -> None:
    topic, client_id = uid("ack"), uid("acker")

    def receiver() -> MqttLink:
        return MqttLink(host=broker.host, port=broker.port, client_id=client_id, session_expiry=60)

    async def scenario() -> None:
        pub = link(broker, "pub")
        await pub.start()
        first = receiver()
        await first.start()
        first.subscribe(topic)
        await first.wait_subscribed()
        pub.publish(topic, b"dispatch-1")
        assert (await next_message(first)).payload == b"dispatch-1"
        await first.stop()  # "crashed" before persisting: no ack

        second = receiver()
        await second.start()
        again = await next_message(second)
        assert again.payload == b"dispatch-1"
        second.ack(again)
        await second.stop()

        third = receiver()
        await third.start()
        assert await no_message(third, 0.5), "an acked message came back"
        await third.stop()
        await pub.stop()

    run(scenario)


def test_qos1_burst_to_a_slow_subscriber_loses_nothing(broker: PrivateBroker) -> None:
    topic, count = uid("burst"), 3000

    async def scenario() -> None:
        sub, pub = link(broker, "sub"), link(broker, "pub")
        await sub.start()
        await pub.start()
        sub.subscribe(topic)
        await sub.wait_subscribed()
        mids = [pub.publish(topic, str(i).encode()) for i in range(count)]
        assert None not in mids
        # Only start acking once the broker has everything (QoS 1 from one client is acked
        # in order, so the last PUBACK says so): Mosquitto's defaults (20 in flight, 1000
        # queued) would have dropped most of the burst by now.
        last = mids[-1]
        assert last is not None and await pub.wait_published(last, 20)
        got = set()
        for _ in range(count):
            msg = await next_message(sub)
            got.add(int(msg.payload))
            sub.ack(msg)
        assert got == set(range(count))
        await pub.stop()
        await sub.stop()

    run(scenario, timeout=30)


def test_retained_message_reaches_a_late_subscriber(broker: PrivateBroker) -> None:
    topic = uid("status")

    async def scenario() -> None:
        pub = link(broker, "pub")
        await pub.start()
        mid = pub.publish(topic, b"online", qos=1, retain=True)
        assert mid is not None
        assert await pub.wait_published(mid, 5)
        late = link(broker, "late")
        await late.start()
        late.subscribe(topic)
        msg = await next_message(late)
        assert (msg.payload, msg.retain) == (b"online", True)
        late.ack(msg)
        await late.stop()
        await pub.stop()

    run(scenario)


_DYING_CLIENT = """
import asyncio, sys
from flexedge.mqtt import MqttLink

async def main():
    host, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    link = MqttLink(host=host, port=port, client_id="dying-" + topic.rsplit("/", 1)[-1],
                    will=(topic, b"offline", 1, True))
    await link.start()
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_last_will_is_retained_when_a_client_dies(broker: PrivateBroker) -> None:
    topic = f"site/{uid('edge')}/status"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A killed process is the honest "died without DISCONNECT": the kernel closes the socket.
    with subprocess.Popen(
        [sys.executable, "-c", _DYING_CLIENT, broker.host, str(broker.port), topic],
        stdout=subprocess.PIPE,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            # Bounded: the child's start() gives up after 10 s and exits, closing the pipe.
            assert proc.stdout.readline().strip() == b"ready"
        finally:
            proc.kill()

    async def scenario() -> None:
        watcher = link(broker, "watcher")
        await watcher.start()
        watcher.subscribe(topic)
        msg = await next_message(watcher)
        assert (msg.payload, msg.retain) == (b"offline", True)
        watcher.ack(msg)
        await watcher.stop()

    run(scenario)


def test_clean_stop_publishes_final_message_and_not_the_will(broker: PrivateBroker) -> None:
    topic = uid("status")

    async def scenario() -> None:
        edge = link(broker, "edge", will=(topic, b"died", 1, True))
        await edge.start()
        await edge.stop(final=(topic, b"stopped", 1, True))
        watcher = link(broker, "watcher")
        await watcher.start()
        watcher.subscribe(topic)
        msg = await next_message(watcher)
        assert (msg.payload, msg.retain) == (b"stopped", True)
        watcher.ack(msg)
        await watcher.stop()

    run(scenario)


def test_request_response_with_correlation_data(broker: PrivateBroker) -> None:
    req_topic = uid("req")

    async def responder(lnk: MqttLink) -> None:
        while True:
            msg = await lnk.inbound.get()
            assert msg.response_topic is not None
            lnk.publish(
                msg.response_topic, b"pong:" + msg.payload, correlation_data=msg.correlation_data
            )
            lnk.ack(msg)

    async def scenario() -> None:
        server = link(broker, "responder")
        await server.start()
        server.subscribe(req_topic)
        await server.wait_subscribed()
        task = asyncio.create_task(responder(server))
        reply = await request(
            Broker(broker.host, broker.port), req_topic, b"ping", uid("resp"), timeout=5
        )
        assert reply == b"pong:ping"
        task.cancel()
        await server.stop()

    run(scenario)


def test_request_times_out_without_a_responder(broker: PrivateBroker) -> None:
    async def scenario() -> None:
        with pytest.raises(RequestTimeout) as caught:
            await request(Broker(broker.host, broker.port), uid("nobody"), b"ping", uid("r"), 0.5)
        assert isinstance(caught.value, TimeoutError)

    run(scenario)


def test_request_raises_broker_error_when_broker_is_down() -> None:
    async def scenario() -> None:
        with pytest.raises(BrokerError):
            await request(Broker("127.0.0.1", free_port()), "req", b"ping", "resp", timeout=0.5)

    run(scenario)


def test_reconnects_and_resubscribes_after_broker_restart() -> None:
    topic = uid("outage")

    async def scenario(broker: PrivateBroker) -> None:
        ups: asyncio.Queue[str] = asyncio.Queue()
        downs: asyncio.Queue[str] = asyncio.Queue()
        sub = link(
            broker,
            "sub",
            on_connect=lambda: ups.put_nowait("sub"),
            on_disconnect=lambda: downs.put_nowait("sub"),
        )
        pub = link(
            broker,
            "pub",
            on_connect=lambda: ups.put_nowait("pub"),
            on_disconnect=lambda: downs.put_nowait("pub"),
        )
        await sub.start()
        await pub.start()
        sub.subscribe(topic)
        await sub.wait_subscribed()
        assert {await ups.get(), await ups.get()} == {"sub", "pub"}

        await asyncio.to_thread(broker.stop)
        assert {await asyncio.wait_for(downs.get(), 5) for _ in range(2)} == {"sub", "pub"}
        assert not pub.connected
        assert pub.publish(topic, b"lost") is None  # down: nothing queued inside paho

        await asyncio.to_thread(broker.start)
        reconnected = {await asyncio.wait_for(ups.get(), 10) for _ in range(2)}
        assert reconnected == {"sub", "pub"}
        await sub.wait_subscribed()  # the subscription was made again on the new broker
        assert pub.publish(topic, b"after") is not None
        msg = await next_message(sub)
        assert msg.payload == b"after"
        sub.ack(msg)
        await pub.stop()
        await sub.stop()

    with PrivateBroker() as own:
        run(lambda: scenario(own))
