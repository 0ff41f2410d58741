"""The MQTT transport, the one package that knows paho-mqtt; every layer may use it.

paho runs its network loop in its own thread; every event it reports is handed to the asyncio
loop with call_soon_threadsafe (paho_bridge.py), so the rest of flexedge sees a small typed
API that lives on one thread (link.py) and raises only flexedge.errors.BrokerError.

Delivery contract (at-least-once, end to end):
- Inbound QoS 1 messages are acknowledged to the broker only when the application calls
  ack(), i.e. after it has persisted the message. With session_expiry > 0 the broker keeps
  unacknowledged messages for us across reconnects and restarts and sends them again.
- publish() never queues while disconnected: it returns None and the caller's outbox keeps the
  message. The caller re-publishes everything not yet confirmed by on_published after each
  on_connect, so the broker may see a message twice; receivers must tolerate duplicates.

Modules: messages.py (what crosses the API), broker_address.py (where a broker is, how to log in,
its TLS),
link.py (MqttLink, one connection), paho_bridge.py (paho's thread side), request_response.py
(one request and its response).
"""

from flexedge.mqtt.broker_address import Broker, BrokerTls
from flexedge.mqtt.link import MqttLink
from flexedge.mqtt.messages import Inbound, Message
from flexedge.mqtt.request_response import RequestTimeout, request

__all__ = ["Broker", "BrokerTls", "Inbound", "Message", "MqttLink", "RequestTimeout", "request"]
