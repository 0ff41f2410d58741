"""The wire contract of the operator's commands beyond `status` and `set-order`: their
requests and replies (MQTT v5 request/response on `cmd/{command}`), next to messages.py,
which holds the market's messages and the first two commands. docs/wire-contract.md
describes each; the generated schema holds them all."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from flexedge.contract.messages import (
    AssetSummary,
    DeliveryReportMsg,
    HoldSummary,
    Number,
    WireTime,
)

Mode = Literal["running", "paused", "safe"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HoldRequest(_Request):
    """`cmd/hold`: hold a device at a setpoint for at most `for_s` seconds."""

    device: str = Field(min_length=1)
    kw: StrictFloat | StrictInt | None = Field(
        allow_inf_nan=False,
        description="site sign; null: out of dispatch and not written at all (a test rig's)",
    )
    for_s: StrictFloat | StrictInt = Field(gt=0, allow_inf_nan=False)


class ReleaseRequest(_Request):
    """`cmd/release`: end a device's hold now."""

    device: str = Field(min_length=1)


class ReportsRequest(_Request):
    """`cmd/reports`: the latest delivery reports, newest last."""

    last: int = Field(default=10, ge=1, le=1000)


class ModeReply(_Reply):
    """`cmd/pause`, `cmd/resume`, `cmd/safe`: the mode the site is in now."""

    ok: Literal[True]
    mode: Mode
    ended: list[str] = Field(
        default_factory=list, description="commitments `safe` ended early (reported)"
    )


class HoldReply(_Reply):
    """`cmd/hold` and `cmd/release`: the device's hold now (null: none)."""

    ok: Literal[True]
    device: str
    hold: HoldSummary | None


class CommitmentDetail(_Reply):
    id: str
    ref: str
    ref_type: str
    window_start: WireTime
    window_end: WireTime
    requested_kwh: Number
    accepted_kwh: Number
    delivered_kwh: Number
    assets: list[str] = Field(description="its share assets, then its backups")


class CommitmentsReply(_Reply):
    """`cmd/commitments`: every open commitment, oldest first."""

    ok: Literal[True]
    commitments: list[CommitmentDetail]


class DeviceDetail(AssetSummary):
    """`cmd/devices`, per device: its live summary and its health."""

    last_reading: WireTime | None = Field(description="when it last answered")
    failures: int = Field(description="failed requests in a row (0: it answers)")
    retry_at: WireTime | None = Field(description="next attempt while backed off")
    last_error: str | None
    held: HoldSummary | None


class DevicesReply(_Reply):
    ok: Literal[True]
    devices: dict[str, DeviceDetail]


class ReportsReply(_Reply):
    ok: Literal[True]
    reports: list[DeliveryReportMsg]


OPERATOR_REPLIES: dict[str, type[BaseModel]] = {
    "pause": ModeReply,
    "resume": ModeReply,
    "safe": ModeReply,
    "hold": HoldReply,
    "release": HoldReply,
    "commitments": CommitmentsReply,
    "devices": DevicesReply,
    "reports": ReportsReply,
}
