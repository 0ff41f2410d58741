"""Power TAC's rules for standing balancing orders and economic control, on plain values.

Power TAC's server keeps two standing orders per tariff, one per direction: up (r > 0) and
down (r < 0). A new order replaces only the order of its own direction. An economic control
curtails `min(ratio, maxCurtailment) x usage` of the timeslot before balancing, and balancing
orders get what curtailable capacity is left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["up", "down"]
DIRECTIONS: tuple[Direction, ...] = ("up", "down")

# The ranges of Power TAC's BalancingOrder, per direction: up (0, 2], down [-1, 0).
RATIO_RANGE: dict[Direction, str] = {"up": "(0, 2]", "down": "[-1, 0)"}


@dataclass(frozen=True, slots=True)
class StandingOrder:
    tariff_id: str
    assets: tuple[str, ...]
    exercise_ratio: float
    price_per_kwh: float

    @property
    def direction(self) -> Direction:
        return "down" if self.exercise_ratio < 0 else "up"


# A tariff's orders in force, at most one per direction.
OrderPair = Mapping[Direction, StandingOrder]


def direction_of_ratio(ratio: float) -> Direction:
    """The slot an order of this ratio goes in (Power TAC: r < 0 down, else up)."""
    return "down" if ratio < 0 else "up"


def direction_of_energy(kwh: float) -> Direction:
    """Which order bounds a control event of `kwh` (> 0 up-regulation)."""
    return "up" if kwh > 0 else "down"


def ratio_problem(ratio: float, direction: Direction | None = None) -> str | None:
    """Why `ratio` cannot be an order (of `direction`, when one is required), if it cannot."""
    if ratio != ratio or ratio in (float("inf"), float("-inf")):
        return f"exercise_ratio {ratio} is not a number"
    if ratio == 0:
        return "exercise_ratio 0 offers nothing; use [-1, 0) (down) or (0, 2] (up)"
    own = direction_of_ratio(ratio)
    if direction is not None and own != direction:
        return (
            f"exercise_ratio {ratio} is {_a(own)} order, not {_a(direction)} order "
            f"({_a(direction)} order has exercise_ratio in {RATIO_RANGE[direction]})"
        )
    if not -1.0 <= ratio <= 2.0:
        return f"exercise_ratio {ratio} is outside the {own} range {RATIO_RANGE[own]}"
    return None


def _a(direction: Direction) -> str:
    return "an up" if direction == "up" else "a down"


def accepted_by_powertac_server(ratio: float) -> bool:
    """Power TAC's server takes broker-issued orders only with 0 < r <= 1 (on tariffs with
    curtailment and no RegulationRate); other ratios exist only as its own automatic orders."""
    return 0 < ratio <= 1


def replace_order(pair: OrderPair, order: StandingOrder) -> dict[Direction, StandingOrder]:
    """The tariff's orders after `order` arrives: it replaces the order of its direction only."""
    updated = dict(pair)
    updated[order.direction] = order
    return updated


def withdraw_order(
    pair: OrderPair, tariff_id: str, direction: Direction
) -> tuple[dict[Direction, StandingOrder], str | None]:
    """The tariff's orders without its `direction` order, or the pair unchanged and why not."""
    if direction not in pair:
        return dict(pair), f"tariff {tariff_id!r} has no {direction} order to withdraw"
    return {d: o for d, o in pair.items() if d != direction}, None


def order_for_event(
    pair: OrderPair, tariff_id: str, kwh: float
) -> tuple[StandingOrder | None, str | None]:
    """The order that bounds a control event of `kwh`, or why there is none."""
    direction = direction_of_energy(kwh)
    order = pair.get(direction)
    if order is None:
        return None, (
            f"tariff {tariff_id!r} has no {direction} order in force "
            f"(kwh {kwh:+.4f} asks for {direction}-regulation)"
        )
    return order, None


def economic_curtailment_kwh(ratio: float, max_curtailment: float, usage_kwh: float) -> float:
    """What an economic control curtails of a load: min(ratio, maxCurtailment) x usage, the
    ratio clamped to [0, 1] as for a tariff without a RegulationRate."""
    share = min(max(ratio, 0.0), 1.0, max(max_curtailment, 0.0))
    return share * max(usage_kwh, 0.0)


def balancing_room_kwh(curtailable_kwh: float, economic_kwh: float) -> float:
    """What balancing orders may still curtail once the economic control is taken out."""
    return max(0.0, curtailable_kwh - economic_kwh)
