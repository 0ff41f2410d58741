"""Relays that do not chatter: a relay load switches only after its minimum on or off time,
and at most so many times an hour; until then its one allowed setpoint is the state it is in.

A closed loop that toggles a relay every tick to hit an average wears out a contactor and
trips a dishwasher. Here the dispatcher is shown the relay as it may be commanded now: free
to switch, or held in its state. Held, the plan puts what the commitment still needs on the
site's other assets, or falls short and says so. Because the plan asks each tick for what a
commitment still owes over what is left of its window, a relay that is free switches off when
the curtailment is due and back on once it has been given: one block, not a toggle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flexedge.controller.core.kinds import Feasible

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class RelayRules:
    min_on_s: float
    min_off_s: float
    max_switches_per_hour: int


@dataclass(slots=True)
class RelayHistory:
    """What the relay was last told (True: shed, False: on, None: nothing yet) and when it
    last switched, with every switch of the last hour."""

    shed: bool | None = None
    since: float = float("-inf")
    switches: list[float] = field(default_factory=list)

    def record(self, shed: bool, now: float) -> bool:
        """The relay is told `shed` at `now`; True when that is a switch."""
        if self.shed is None:
            # The first command is no switch; what the relay did before is not known (it may
            # just have switched), so its minimum time counts from here: never early.
            self.shed, self.since = shed, now
            return False
        if shed == self.shed:
            return False
        self.shed, self.since = shed, now
        self.switches = [t for t in self.switches if now - t < HOUR_S] + [now]
        return True


def may_switch(history: RelayHistory, rules: RelayRules, now: float) -> bool:
    """Whether the relay may change state at `now`."""
    if history.shed is None:
        return True
    least = rules.min_off_s if history.shed else rules.min_on_s
    if now - history.since < least:
        return False
    recent = sum(1 for t in history.switches if now - t < HOUR_S)
    return recent < rules.max_switches_per_hour


def relay_feasible(
    feasible: Feasible, history: RelayHistory, rules: RelayRules, now: float
) -> Feasible:
    """A relay load's setpoints as it may be commanded now: both steps when it may switch,
    else only the step of the state it is in. `feasible` has the two steps (on: its full
    demand, shed: its firm part), as load_feasible gives them."""
    if not feasible.steps or may_switch(history, rules, now) or history.shed is None:
        return feasible
    on, shed = min(feasible.steps), max(feasible.steps)  # site sign: drawing more is lower
    held = shed if history.shed else on
    return Feasible(held, held, feasible.baseline_kw, steps=(held,))


def is_shed(command: float | None) -> bool:
    """A relay load's command sheds it when it caps it (None releases it: on)."""
    return command is not None
