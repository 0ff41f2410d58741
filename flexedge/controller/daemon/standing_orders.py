"""The Power TAC side of the shell: each tariff's standing balancing orders.

Power TAC's server keeps two orders in force per tariff, one up and one down, each replaced
only by a new order of its own direction; flexedge configures, publishes (retained, on
market/balancing-order/{tariff}/up and .../down) and withdraws them the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from flexedge.config.loader import Site
from flexedge.contract.wire import balancing_order
from flexedge.controller.core.control_admission import live_order
from flexedge.controller.core.orders import (
    DIRECTIONS,
    Direction,
    StandingOrder,
    replace_order,
    withdraw_order,
)
from flexedge.controller.daemon.control import ControlLoop
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store

log = logging.getLogger(__name__)


class StandingOrders:
    def __init__(
        self,
        site: Site,
        control: ControlLoop,
        store: Store,
        outbox: Outbox,
        clock: Callable[[], float],
    ) -> None:
        self.control = control
        self.store = store
        self.outbox = outbox
        self.clock = clock
        tariffs = site.config.tariffs
        # What the operator configured, and what is published (in force) now: per tariff at
        # most one order per direction (Power TAC keeps an up and a down order side by side),
        # each the policy cut to the capability the tariff's assets have at the moment.
        self.tariff_assets = {t.id: tuple(t.assets) for t in tariffs}
        self.policies: dict[str, dict[Direction, StandingOrder]] = {
            t.id: {
                o.direction: StandingOrder(t.id, tuple(t.assets), o.exercise_ratio, o.price_per_kwh)
                for o in t.orders()
            }
            for t in tariffs
        }
        self.orders: dict[str, dict[Direction, StandingOrder]] = {t: {} for t in self.policies}
        # Paused by the operator: every order is withdrawn (the policies stay, for resume).
        self.suspended = False

    # -- the operator's standing orders ---------------------------------------------------
    def policy(self, tariff_id: str, direction: Direction) -> StandingOrder | None:
        """What the operator configured for a tariff and direction (None: no such order)."""
        return self.policies.get(tariff_id, {}).get(direction)

    def set_policy(self, policy: StandingOrder) -> None:
        """A new configured order: it replaces only the order of its own direction;
        refresh_orders() publishes its live form."""
        self.policies[policy.tariff_id] = replace_order(self.policies[policy.tariff_id], policy)

    def withdraw_policy(self, tariff_id: str, direction: Direction) -> str | None:
        """Withdraw a tariff's order of one direction; refresh_orders() clears its topic.
        Returns why not, if it cannot (nothing changes then)."""
        pair, problem = withdraw_order(self.policies[tariff_id], tariff_id, direction)
        if problem is None:
            self.policies[tariff_id] = pair
        return problem

    def order_in_force(self, tariff_id: str, direction: Direction) -> StandingOrder | None:
        """The order published for a tariff and direction now (None: none)."""
        return self.orders.get(tariff_id, {}).get(direction)

    def orders_in_force(self) -> list[StandingOrder]:
        return [o for pair in self.orders.values() for o in pair.values()]

    def clear_stale_orders(self) -> None:
        """At start: clear retained orders a late subscriber must not take as in force, those
        on the single-order topic of older versions and those of directions with no order."""
        with self.store.transaction():
            for tariff_id, pair in self.policies.items():
                self.outbox.clear_retained(f"market/balancing-order/{tariff_id}")
                for direction in DIRECTIONS:
                    if direction not in pair:
                        self.outbox.clear_retained(order_topic(tariff_id, direction))
        self.outbox.flush()

    def refresh_orders(self) -> list[StandingOrder]:
        """Publish (retained) every order whose live form changed, clear withdrawn ones;
        returns the orders published."""
        now = self.clock()
        states = self.control.asset_states(now)
        changed: list[StandingOrder] = []
        withdrawn: list[tuple[str, Direction]] = []
        for tariff_id, configured in self.policies.items():
            pair = {} if self.suspended else configured
            in_force = self.orders[tariff_id]
            withdrawn += [(tariff_id, d) for d in in_force if d not in pair]
            for direction, policy in pair.items():
                order = live_order(policy, states)
                if order is None:
                    if direction not in in_force:
                        log.info(
                            "no %s order for %s yet: none of %s can give it",
                            direction,
                            tariff_id,
                            ", ".join(policy.assets),
                        )
                    continue
                if in_force.get(direction) != order:
                    changed.append(order)
        if not changed and not withdrawn:
            return []
        # Memory follows the log: the orders in force change only once the transaction that
        # publishes them has committed, so a failed write is tried again on the next refresh.
        with self.store.transaction():
            for tariff_id, direction in withdrawn:
                self.outbox.clear_retained(order_topic(tariff_id, direction))
                self.store.log_event(now, "order-withdrawn", f"{tariff_id} {direction}")
            for order in changed:
                key = f"{order.tariff_id}:{order.exercise_ratio}:{order.price_per_kwh}"
                msg_id = "bo-" + hashlib.sha1(key.encode()).hexdigest()[:16]
                self.store.log_order(
                    order.tariff_id, order.exercise_ratio, order.price_per_kwh, msg_id, now
                )
                self.outbox.put(
                    order_topic(order.tariff_id, order.direction),
                    balancing_order(
                        order.tariff_id, order.exercise_ratio, order.price_per_kwh, msg_id
                    ),
                    retain=True,
                )
        for tariff_id, direction in withdrawn:
            del self.orders[tariff_id][direction]
            log.info("%s order of %s withdrawn", direction, tariff_id)
        for order in changed:
            self.orders[order.tariff_id][order.direction] = order
            log.info(
                "%s order of %s: exercise_ratio %s at %s",
                order.direction,
                order.tariff_id,
                order.exercise_ratio,
                order.price_per_kwh,
            )
        self.outbox.flush()
        return changed


def order_topic(tariff_id: str, direction: Direction) -> str:
    """Where a tariff's order of one direction is published, below the site."""
    return f"market/balancing-order/{tariff_id}/{direction}"
