"""Where an MQTT broker is and how to log in to it.

Drivers connect to it and device simulators publish to it, so it lives with the transport
both may import, not in either of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class BrokerTls:
    """TLS to the broker: the files already resolved to paths a process can open."""

    # None: the system's trusted CAs (a broker with a public certificate).
    ca_file: str | None = None
    # A client certificate, for a broker that asks for one; both or neither.
    cert_file: str | None = None
    key_file: str | None = None
    # Off only for a broker whose certificate names another host (an address in a lab):
    # without it any certificate the CA signed is taken for this broker.
    check_hostname: bool = True


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    # repr=False: a Broker is logged and shown in test failures; its password must not be.
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30
    tls: BrokerTls | None = None
