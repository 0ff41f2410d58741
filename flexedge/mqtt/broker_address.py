"""Where an MQTT broker is and how to log in to it.

Drivers connect to it and device simulators publish to it, so it lives with the transport
both may import, not in either of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
