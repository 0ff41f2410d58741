"""The site file's `retention` section: how long the local log keeps what, so that months of
running do not fill a gateway's flash.

Telemetry is kept raw for a while and as per-minute averages for longer; acknowledged
messages (inbound, and the outbox rows the broker confirmed) for a while; the decisions and
their reports (commitments, reports, measurements, offers, orders, setpoints, events) for
longest. An open commitment and an unsent outbox row are never removed, however old.
Days may be fractions (a test of accelerated time uses seconds' worth).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from flexedge.config.field_types import Strict

DAY_S = 86400.0


class RetentionSettings(Strict):
    telemetry_raw_days: float = Field(default=7.0, gt=0, le=3660)
    telemetry_minutes_days: float = Field(default=365.0, gt=0, le=36600)
    messages_days: float = Field(default=30.0, gt=0, le=36600)
    records_days: float = Field(default=365.0, gt=0, le=36600)

    @model_validator(mode="after")
    def _minutes_outlive_raw(self) -> Self:
        if self.telemetry_minutes_days < self.telemetry_raw_days:
            raise ValueError(
                "retention.telemetry_minutes_days must be at least telemetry_raw_days "
                "(the averages are made from the raw rows as they age out)"
            )
        return self
