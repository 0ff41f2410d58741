"""Merit order: which other assets back up a balancing trade, and how they cover for it.

A D3A trade is bought from one asset's offer, but the site owes the energy. What that asset
cannot deliver (lost, or at a limit it would not leave given time) goes to the site's other
registered assets, cheapest balancing rate first. A backup serves its own commitments first;
the shortfalls it is asked to cover are netted on it, as commitments on one device are, so
an upward and a downward trade lost together cost it only their difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from flexedge.controller.core.kinds import Feasible

AssetKind = Literal["battery", "flexible_load", "generator"]

# Shortfalls smaller than this (1 W) stay with the share assets' closed loop.
SPILL_MIN_KW = 1e-3


def merit_order(
    registry: Mapping[str, tuple[float, float]],
    kinds: Mapping[str, AssetKind],
    direction: int,
    exclude: str,
) -> tuple[str, ...]:
    """The registered assets that may cover a shortfall of `exclude`'s balancing energy in
    `direction`, cheapest first: by supply rate for upward energy, by demand rate for
    downward (the rates they would offer that energy at; ties by name).

    Loads here can only be curtailed, so they count for upward energy only.
    """
    rate_index = 1 if direction > 0 else 0
    candidates = [
        (rates[rate_index], name)
        for name, rates in registry.items()
        if name != exclude and name in kinds and (direction > 0 or kinds[name] != "flexible_load")
    ]
    return tuple(name for _, name in sorted(candidates))


def _net_on_device(
    feasible: Feasible, setpoint: float, asked: Mapping[str, float]
) -> tuple[float, dict[str, float]]:
    """Move one backup from `setpoint` toward the sum of what it is asked, never past it.

    When it cannot get all the way, only the side that pushed it to its limit is cut (in
    proportion): an upward request that the device cannot follow up is cut, the downward
    ones that pull the other way are granted in full, and the reverse.
    """
    up = sum(kw for kw in asked.values() if kw > 0)
    down = sum(kw for kw in asked.values() if kw < 0)
    target = setpoint + up + down
    final = feasible.toward(setpoint, target)
    if abs(final - target) <= 1e-9:
        return final, dict(asked)
    if final < target:  # stopped short going up: up > -down >= 0
        scale = (final - setpoint - down) / up
        return final, {cid: kw * scale if kw > 0 else kw for cid, kw in asked.items()}
    scale = (final - setpoint - up) / down  # stopped short going down: down < -up <= 0
    return final, {cid: kw * scale if kw < 0 else kw for cid, kw in asked.items()}


def cover_shortfalls(
    shortfalls: Mapping[str, tuple[float, tuple[str, ...]]],
    ranges: Mapping[str, Feasible],
    setpoints: Mapping[str, float],
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Cover each commitment's shortfall (kW, signed; its backups in merit order) from its
    backups, given the devices that can be commanded (`ranges`) and their setpoints after
    their own commitments. Returns the new setpoints of the backups asked and the kW each
    commitment got on each.

    Each commitment asks its first backup for all it is short; what a backup cannot give
    moves on to that commitment's next backup. A backup's grants are fixed at what it gave,
    unless later arrivals on the same device cut them, which sends the cut part on as well:
    each shortfall only ever moves down its own merit order, so this ends.
    """
    asked: dict[str, dict[str, float]] = {}
    position = dict.fromkeys(shortfalls, 0)

    def place(cid: str, kw: float) -> bool:
        backups = shortfalls[cid][1]
        while position[cid] < len(backups):
            backup = backups[position[cid]]
            position[cid] += 1
            if backup in ranges and backup in setpoints:
                asked.setdefault(backup, {})[cid] = asked.get(backup, {}).get(cid, 0.0) + kw
                return True
        return False

    for cid, (short, _) in shortfalls.items():
        place(cid, short)
    while True:
        results = {b: _net_on_device(ranges[b], setpoints[b], a) for b, a in asked.items()}
        granted = {b: grants for b, (_, grants) in results.items()}
        moved = False
        for cid, (short, _) in shortfalls.items():
            unmet = short - sum(g.get(cid, 0.0) for g in granted.values())
            if abs(unmet) <= SPILL_MIN_KW or unmet * short <= 0:
                continue
            # Hold each backup to what it gave, then ask the next one for the rest.
            for backup, grants in granted.items():
                if cid in grants:
                    asked[backup][cid] = grants[cid]
            moved = place(cid, unmet) or moved
        if not moved:
            return {b: final for b, (final, _) in results.items()}, granted
