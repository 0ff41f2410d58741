"""The site file's `metrics` section: where the Prometheus endpoint listens, if anywhere.

Off unless the file asks (no section, or `listen: null`). The address is an IP literal (IPv6
in brackets) or `localhost`, and a port: a host name other than localhost is refused, so that
whether the endpoint is reachable from outside the gateway is plain from the file itself. A
non-loopback address is allowed (the daemon warns when it starts): the endpoint has no login.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import field_validator, model_validator

from flexedge.config.field_types import Strict

EXAMPLE_PORT = 9108  # the port the README and the example use


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9108`, `[::1]:9108` or `localhost:9108` as (host, port); ValueError else."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:{EXAMPLE_PORT}, got {text!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"the port must be a number from 1 to 65535, got {port!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    if bare == "localhost":
        return bare, int(port)
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"the host must be an IP address or localhost, got {host!r}") from None
    if address.version == 6 and not bracketed:
        raise ValueError(f"an IPv6 address goes in brackets, as [{bare}]:{port}")
    return bare, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


class MetricsSettings(Strict):
    # HOST:PORT of the Prometheus text endpoint; None: no endpoint.
    listen: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # `metrics:` with nothing under it is YAML null: the same as no section.
        return {} if value is None else value

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when the endpoint is off."""
        return None if self.listen is None else parse_listen(self.listen)

    @property
    def loopback(self) -> bool:
        address = self.address
        return address is None or is_loopback(address[0])
