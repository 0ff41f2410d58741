"""Each control tick: from open commitments to one setpoint per device, inside every limit.

Closed loop: a commitment asks for the energy it still owes spread over the time it has left,
so a shortfall (slow start, a clipped tick) raises the next ticks' power until it is caught up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flexedge.controller.core.capability import remaining_kwh
from flexedge.controller.core.kinds import Feasible
from flexedge.controller.core.merit import SPILL_MIN_KW, cover_shortfalls
from flexedge.controller.core.model import BatteryLimits, Commitment, Progress, RefType

# Served first on a shared device: Power TAC applies economic control before balancing, so
# it takes its share of a load's curtailable capacity whichever of the two arrived first.
SERVED_FIRST = frozenset({RefType.ECONOMIC_CONTROL})


@dataclass(frozen=True, slots=True)
class ResponseFigures:
    """How a device follows a setpoint: what `flexedge prequalify` measured, or the data
    sheet says (0 and None: at once). Dispatch starts a device on a commitment ahead of its
    window, and lets it go its delay ahead of the window's end, so that its response falls
    inside the window rather than after each edge (`asked_kw`)."""

    delay_s: float = 0.0
    ramp_kw_per_s: float | None = None

    def lead_s(self, delta_kw: float) -> float:
        """The delay, plus half the ramp's time for a change of `delta_kw`: a linear ramp
        started that early gives the window the energy of a step at its edge."""
        ramp_s = abs(delta_kw) / self.ramp_kw_per_s / 2 if self.ramp_kw_per_s else 0.0
        return self.delay_s + ramp_s


AT_ONCE = ResponseFigures()


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the dispatcher may command a device to; None when it cannot be counted on
    (stale telemetry, not following its setpoint)."""

    feasible: Feasible | None
    response: ResponseFigures = AT_ONCE

    @property
    def available(self) -> bool:
        return self.feasible is not None


def battery_view(
    limits: BatteryLimits, soc: float | None, available: bool, horizon_s: float
) -> DeviceView:
    """A battery idles at 0 kW; its range keeps ratings and the SoC window for the horizon."""
    if not available or soc is None:
        return DeviceView(None)
    p_min, p_max = limits.power_range(soc, horizon_s)
    return DeviceView(Feasible(p_min, p_max, baseline_kw=0.0))


@dataclass(frozen=True, slots=True)
class Plan:
    """Setpoints per available device and the kW each commitment got on each device: what
    metering shares the device's measured energy by (in a let-go, what is still on its way)."""

    setpoints: dict[str, float]
    allocations: dict[str, dict[str, float]]


def commitment_power(commitment: Commitment, progress: Progress | None, now: float) -> float:
    """kW the commitment needs from now on to end exactly on its accepted energy."""
    if not commitment.active_at(now):
        return 0.0
    hours_left = (commitment.window_end - now) / 3600.0
    return remaining_kwh(commitment, progress) / hours_left


def asked_kw(
    commitment: Commitment, power: float, fraction: float, response: ResponseFigures, now: float
) -> float | None:
    """What a device carrying `fraction` of a commitment is asked for it at `now`, when the
    commitment needs `power` from now on: its fraction of that inside the window; of the
    window's average power in the lead before the window (the device's response to that
    power); 0 in the device's delay before the window's end, when what it was told is still on
    its way. Its ramp down is left to run past the end: ramping down inside the window would
    leave the window short, with no time left to catch up. Each lead is at most half the
    window. None: nothing to ask."""
    window_s = commitment.window_end - commitment.window_start
    average_kw = commitment.accepted_kwh / (window_s / 3600.0)
    lead = min(response.lead_s(average_kw * fraction), window_s / 2)
    if lead and commitment.window_start - lead <= now < commitment.window_start:
        return average_kw * fraction
    if letting_go(commitment, response, now):
        return 0.0
    return power * fraction if power else None


def in_flight_kw(
    commitment: Commitment, fraction: float, response: ResponseFigures, now: float
) -> float | None:
    """In the device's let-go before the window's end (`asked_kw` asks 0 there), what it is
    still delivering for the commitment: its fraction of the window's average power, which
    metering shares the device's measured energy by. None outside a let-go."""
    if not letting_go(commitment, response, now):
        return None
    window_s = commitment.window_end - commitment.window_start
    return commitment.accepted_kwh / (window_s / 3600.0) * fraction


def letting_go(commitment: Commitment, response: ResponseFigures, now: float) -> bool:
    """Whether `now` is in the device's let-go: its delay (at most half the window) before
    the window's end, when what it was told is still on its way."""
    window_s = commitment.window_end - commitment.window_start
    let_go = min(response.delay_s, window_s / 2)
    return bool(let_go) and commitment.window_end - let_go <= now < commitment.window_end


def spread_clip(requests: Mapping[str, float], net_target: float) -> dict[str, float]:
    """Adjust each request so they add up to `net_target`, in proportion to their size.

    With requests of one sign this is plain pro-rata scaling; with mixed signs the
    difference is shared by absolute size, so the parts always add up to the target.
    """
    total_abs = sum(abs(p) for p in requests.values())
    if total_abs == 0.0:
        return dict(requests)
    gap = net_target - sum(requests.values())
    # Weight first: gap * |p| can underflow to 0 for tiny p where |p| / total cannot.
    return {cid: p + gap * (abs(p) / total_abs) for cid, p in requests.items()}


def share_on_device(
    wanted: Mapping[str, float], first: frozenset[str], feasible: Feasible, delta_kw: float
) -> dict[str, float]:
    """Split what a device does (`delta_kw` from its baseline) among its commitments.

    The commitments in `first` get what they ask, as far as the device's range allows them
    alone; the others share the rest (pro rata, netted as `spread_clip` does). Without
    commitments of both groups this is `spread_clip` of them all.
    """
    ahead = {cid: kw for cid, kw in wanted.items() if cid in first}
    rest = {cid: kw for cid, kw in wanted.items() if cid not in first}
    if not ahead or not rest:
        return spread_clip(wanted, delta_kw)
    baseline = feasible.baseline_kw
    asked = sum(ahead.values())
    ahead_kw = min(max(asked, feasible.p_min - baseline), feasible.p_max - baseline)
    return {**spread_clip(ahead, ahead_kw), **spread_clip(rest, delta_kw - ahead_kw)}


def plan(
    commitments: Sequence[Commitment],
    progress: Mapping[str, Progress],
    devices: Mapping[str, DeviceView],
    now: float,
) -> Plan:
    """Setpoints for the next control period (the views carry each device's range for it).

    A commitment's share on an unavailable device moves to its other available share assets
    (pro rata). On a device asked more than it can do, economic control is served first
    (`SERVED_FIRST`) and the others share what is left. What its share assets cannot deliver
    at all (none available, or at a limit they would not leave given time) goes to its
    backups in merit order, each up to the room its own commitments left.
    A device with response figures is started on a commitment ahead of its window, and let
    go of it its delay ahead of the window's end (`asked_kw`).
    A device without fresh telemetry gets no setpoint at all: the controller cannot count on
    it and its own lease brings it back to its safe state.
    """
    wanted: dict[str, dict[str, float]] = {name: {} for name in devices}
    in_flight: dict[str, dict[str, float]] = {name: {} for name in devices}
    first = frozenset(c.id for c in commitments if c.ref_type in SERVED_FIRST)
    uncovered: dict[str, float] = {}
    for commitment in commitments:
        power = commitment_power(commitment, progress.get(commitment.id), now)
        usable = [(a, s) for a, s in commitment.shares if a in devices and devices[a].available]
        usable_total = sum(s for _, s in usable)
        if not usable and power:
            uncovered[commitment.id] = power
        for asset, share in usable:
            response = devices[asset].response
            asked = asked_kw(commitment, power, share / usable_total, response, now)
            if asked is not None:
                wanted[asset][commitment.id] = asked
            flying = in_flight_kw(commitment, share / usable_total, response, now)
            if flying is not None:
                in_flight[asset][commitment.id] = flying
    setpoints: dict[str, float] = {}
    allocations: dict[str, dict[str, float]] = {}
    for name, view in devices.items():
        if view.feasible is None:
            continue
        baseline = view.feasible.baseline_kw
        setpoint = view.feasible.clip(baseline + sum(wanted[name].values()))
        setpoints[name] = setpoint
        allocations[name] = share_on_device(wanted[name], first, view.feasible, setpoint - baseline)
        # Let go, told nothing, but still delivering: metered by what is on its way, so that
        # opposite commitments on one device do not split their net between them.
        allocations[name].update(in_flight[name])
        # Backups cover what the device cannot do now nor given time: what its ramp holds
        # back for a tick the closed loop catches up, without curtailing a load for a
        # second; and what it gives beyond the request now leaves nothing to cover.
        lasting = view.feasible.lasting.clip(baseline + sum(wanted[name].values()))
        given_time = share_on_device(wanted[name], first, view.feasible.lasting, lasting - baseline)
        for cid, kw in wanted[name].items():
            best = max(allocations[name][cid], given_time[cid], key=lambda a: a * kw)
            uncovered[cid] = uncovered.get(cid, 0.0) + kw - best
    shortfalls = {
        c.id: (uncovered[c.id], c.backups)
        for c in commitments
        # Only a shortfall in the commitment's own direction: netting against opposite
        # commitments on a shared device can leave it with more than it asked for.
        if c.backups
        and c.active_at(now)
        and abs(uncovered.get(c.id, 0.0)) > SPILL_MIN_KW
        and uncovered[c.id] * c.accepted_kwh > 0
    }
    if shortfalls:
        ranges = {n: v.feasible for n, v in devices.items() if v.feasible is not None}
        moved, granted = cover_shortfalls(shortfalls, ranges, setpoints)
        setpoints.update(moved)
        for backup, grants in granted.items():
            for cid, kw in grants.items():
                allocations[backup][cid] = allocations[backup].get(cid, 0.0) + kw
    return Plan(setpoints, allocations)
