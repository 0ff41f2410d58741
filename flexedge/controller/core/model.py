"""Plain data shared by the core's functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class AckStatus(StrEnum):
    ACCEPTED = "accepted"
    CLIPPED = "clipped"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class RefType(StrEnum):
    BALANCING_TRADE = "balancing_trade"
    BALANCING_CONTROL = "balancing_control"
    ECONOMIC_CONTROL = "economic_control"


@dataclass(frozen=True, slots=True)
class BatteryLimits:
    """What the controller may do with a battery. The floor includes the reserve."""

    asset: str
    capacity_kwh: float
    soc_floor: float
    soc_ceiling: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float
    discharge_efficiency: float

    def dischargeable_kwh(self, soc: float) -> float:
        """Energy the battery can still inject at the bus before it reaches its floor."""
        return max(0.0, soc - self.soc_floor) * self.capacity_kwh * self.discharge_efficiency

    def chargeable_kwh(self, soc: float) -> float:
        """Energy the battery can still take from the bus before it reaches its ceiling."""
        return max(0.0, self.soc_ceiling - soc) * self.capacity_kwh / self.charge_efficiency

    def power_range(self, soc: float, horizon_s: float) -> tuple[float, float]:
        """(lowest, highest) power that keeps ratings and the SoC window for `horizon_s`."""
        hours = max(horizon_s, 1e-3) / 3600.0
        p_max = min(self.max_discharge_kw, self.dischargeable_kwh(soc) / hours)
        p_min = -min(self.max_charge_kw, self.chargeable_kwh(soc) / hours)
        return p_min, p_max


@dataclass(frozen=True, slots=True)
class Offer:
    """A D3A balancing offer: signed energy for one slot at a rate (ct/kWh)."""

    id: str
    asset: str
    slot_start: float
    slot_end: float
    energy_kwh: float
    rate_ct_per_kwh: float

    @property
    def price_ct(self) -> float:
        return round(self.rate_ct_per_kwh * abs(self.energy_kwh), 6)


@dataclass(frozen=True, slots=True)
class Commitment:
    """Energy to deliver in a window, spread over assets by share (shares add up to 1)."""

    id: str
    ref: str
    ref_type: RefType
    window_start: float
    window_end: float
    requested_kwh: float
    accepted_kwh: float
    shares: tuple[tuple[str, float], ...]
    # What the market pays for the accepted energy (ct for D3A trades, the event's payment
    # for Power TAC control events), for settlement in the report.
    settlement: float = 0.0
    # Assets that may take over what the share assets cannot deliver (unavailable, at a
    # limit), in merit order: the first has the cheapest balancing rate. They carry none of
    # the commitment's energy in admission; dispatch only uses their spare room.
    backups: tuple[str, ...] = ()

    @property
    def assets(self) -> tuple[str, ...]:
        """The assets that carry the commitment by share."""
        return tuple(asset for asset, _ in self.shares)

    @property
    def may_use(self) -> tuple[str, ...]:
        """Every asset dispatch may put this commitment on: share assets, then backups."""
        return self.assets + self.backups

    def active_at(self, now: float) -> bool:
        return self.window_start <= now < self.window_end


@dataclass(slots=True)
class Progress:
    """Metered delivery of one commitment so far (the shell keeps it, the core updates it)."""

    delivered_kwh: float = 0.0
    by_asset: dict[str, float] = field(default_factory=dict)
    covered_s_by_asset: dict[str, float] = field(default_factory=dict)

    def add(self, asset: str, kwh: float, covered_s: float) -> None:
        self.delivered_kwh += kwh
        self.by_asset[asset] = self.by_asset.get(asset, 0.0) + kwh
        self.covered_s_by_asset[asset] = self.covered_s_by_asset.get(asset, 0.0) + covered_s


@dataclass(frozen=True, slots=True)
class Admission:
    """The core's answer to an inbound market message."""

    status: AckStatus
    reason: str
    commitment: Commitment | None = None

    @staticmethod
    def reject(reason: str) -> Admission:
        return Admission(AckStatus.REJECTED, reason)
