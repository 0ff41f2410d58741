"""When a commitment and a metered slot are over, so their report can go out.

Both wait for metering to reach past their end (the daemon ticks exactly at a window's end,
so that is usually at once), but never longer than STALE_PERIODS periods past it: a device
that stopped answering must not hold up a report, its gap shows in the coverage instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from flexedge.controller.core.health import stale_after_s
from flexedge.controller.core.model import Commitment


def commitment_closes(
    commitment: Commitment,
    last_metered_ts: Mapping[str, float],
    period_s: float,
    now: float,
) -> bool:
    """Is `commitment` ready for its report at `now`, given the time of each asset's last
    metered sample (an asset never metered is missing from `last_metered_ts`)?"""
    if now < commitment.window_end:
        return False
    metered_past_end = all(
        a in last_metered_ts and last_metered_ts[a] >= commitment.window_end
        for a in commitment.assets
    )
    return metered_past_end or now >= commitment.window_end + stale_after_s(period_s)


def slot_closes(
    slot_start: float, slot_s: float, last_metered_ts: float, period_s: float, now: float
) -> bool:
    """Is one asset's slot ready for its measurement at `now`, given its last metered sample?"""
    slot_end = slot_start + slot_s
    return slot_end <= min(last_metered_ts, now) or slot_end + stale_after_s(period_s) <= now
