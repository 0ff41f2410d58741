"""`flexedge fault`: switch a fault of a device of a running `flexedge sim --mqtt HOST:PORT`.

    flexedge fault --config site.yaml --device battery-1 --latency 0.5
    flexedge fault --mqtt 127.0.0.1:1883 --site demo --device battery-1 --latency 0.5
    flexedge fault ... --drop | --no-drop | --exception DEVICE_BUSY | --exception none
    flexedge fault ... --frozen | --ignore-writes | --clear

Options combine into one message, validated here before it is sent. The command then waits
for the simulator's confirmation on the fault-state topic and prints the device's faults;
without one (no simulator of that site on that broker) it exits 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from flexedge.errors import BrokerError
from flexedge.mqtt import Broker, MqttLink
from flexedge.simulators.devices.faults import (
    FaultError,
    FaultState,
    command_topic,
    state_topic,
    updated,
)


def fault_message(
    *,
    drop: bool | None = None,
    latency_s: float | None = None,
    exception: str | None = None,
    frozen: bool | None = None,
    ignore_writes: bool | None = None,
    clear: bool = False,
) -> dict[str, object]:
    """The JSON message for the options given (None: leave that fault as it is)."""
    message: dict[str, object] = {"clear": True} if clear else {}
    for key, value in (
        ("drop", drop),
        ("latency_s", latency_s),
        ("frozen", frozen),
        ("ignore_writes", ignore_writes),
    ):
        if value is not None:
            message[key] = value
    if exception is not None:
        # "none" becomes null: the JSON way to switch the exception off.
        message["exception"] = None if exception.strip().lower() == "none" else exception
    return message


async def send_fault(
    broker: Broker, site: str, device: str, message: dict[str, object], timeout: float = 5.0
) -> dict[str, object] | None:
    """Publish one fault message as an MQTT v5 request; the simulator's answer (the device's
    fault state, or {"error": reason} when it refused the message), or None if no answer came
    within `timeout` seconds. Raises BrokerError if the broker cannot be reached."""
    link = MqttLink.for_broker(broker, client_id=f"flexedge-fault-{uuid.uuid4().hex[:12]}")
    await link.start(wait=timeout)
    request_id = uuid.uuid4().hex.encode()
    reply_topic = f"{state_topic(site, device)}/reply/{request_id.decode()}"
    try:
        async with asyncio.timeout(timeout):
            link.subscribe(reply_topic, qos=1)
            await link.wait_subscribed(timeout)
            mid = link.publish(
                command_topic(site, device),
                json.dumps(message).encode(),
                qos=1,
                response_topic=reply_topic,
                correlation_data=request_id,
            )
            if mid is None:
                raise BrokerError(
                    f"lost the connection to {broker.host}:{broker.port} before publishing"
                )
            while True:
                msg = await link.inbound.get()
                link.ack(msg)
                if msg.correlation_data != request_id:
                    continue
                try:
                    answer = json.loads(msg.payload)
                except json.JSONDecodeError:
                    continue
                if isinstance(answer, dict):
                    return answer
    except TimeoutError:
        return None
    finally:
        await link.stop()


def main_fault(
    broker: Broker, site: str, device: str, message: dict[str, object], timeout: float = 5.0
) -> int:
    """Blocking entry for `flexedge fault`: 0 when confirmed, 1 without confirmation, 2 for
    a message that would be refused."""
    if not message:
        print(
            "flexedge: nothing to switch: give --drop, --latency, --exception, --frozen, "
            "--ignore-writes, their --no- forms, or --clear",
            file=sys.stderr,
        )
        return 2
    try:
        updated(FaultState(), message)
    except FaultError as exc:
        print(f"flexedge: {exc}", file=sys.stderr)
        return 2
    host, port = broker.host, broker.port
    state = asyncio.run(send_fault(broker, site, device, message, timeout))
    if state is None:
        print(
            f"flexedge: sent, but no simulator confirmed on {state_topic(site, device)} "
            f"within {timeout:g} s (is `flexedge sim --mqtt {host}:{port}` running for "
            f"site {site} with device {device}?)",
            file=sys.stderr,
        )
        return 1
    if "error" in state:
        print(f"flexedge: the simulator refused it: {state['error']}", file=sys.stderr)
        return 2
    try:
        print(f"{device}: {updated(FaultState(), state).describe()}")
    except FaultError:
        print(f"{device}: {json.dumps(state)}")
    return 0
