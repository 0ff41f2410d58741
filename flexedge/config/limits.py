"""The site file's `limits` section: what a market message or an operator may ask."""

from __future__ import annotations

from pydantic import Field

from flexedge.config.field_types import Strict
from flexedge.controller.core.plausibility import Plausibility

_DEFAULT = Plausibility()


class LimitSettings(Strict):
    # A slot or timeslot starting later than this from now is refused (default: a day).
    horizon_s: float = Field(default=_DEFAULT.horizon_s, gt=0, le=31 * 86400)
    # D3A rates (trades, spot trades), ct/kWh, either sign.
    max_rate_ct_per_kwh: float = Field(default=_DEFAULT.max_rate_ct_per_kwh, gt=0, le=1e6)
    # Power TAC order prices (site file and `flexedge order`), per kWh, either sign.
    max_price_per_kwh: float = Field(default=_DEFAULT.max_price_per_kwh, gt=0, le=1e4)
    # Power TAC control event payments, either sign.
    max_payment: float = Field(default=_DEFAULT.max_payment, gt=0, le=1e9)
    # The longest an operator may hold a device at a manual setpoint (`flexedge hold`).
    max_hold_s: float = Field(default=4 * 3600, gt=0, le=7 * 86400)

    def plausibility(self) -> Plausibility:
        return Plausibility(
            self.horizon_s, self.max_rate_ct_per_kwh, self.max_price_per_kwh, self.max_payment
        )
