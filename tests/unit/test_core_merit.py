"""Merit order: what a balancing trade's own asset cannot deliver goes to the site's other
registered assets, cheapest balancing rate first, each only up to the room it has left."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.dispatch import DeviceView, battery_view, plan
from flexedge.controller.core.kinds import (
    Feasible,
    GeneratorLimits,
    LoadLimits,
    generator_feasible,
    load_feasible,
)
from flexedge.controller.core.merit import AssetKind, merit_order
from flexedge.controller.core.model import AckStatus, Offer, Progress
from flexedge.controller.core.trade_admission import TradeRequest, admit_trade
from tests.support.core_fixtures import T0, battery, commitment
from tests.support.properties import examples

# {asset: (demand rate, supply rate)} in ct/kWh
REGISTRY = {
    "b1": (33.0, 35.0),
    "b2": (31.0, 38.0),
    "heat-pump": (30.0, 34.0),
    "genset": (20.0, 40.0),
}
KINDS: dict[str, AssetKind] = {
    "b1": "battery",
    "b2": "battery",
    "heat-pump": "flexible_load",
    "genset": "generator",
}


def test_upward_backups_are_ordered_by_supply_rate() -> None:
    assert merit_order(REGISTRY, KINDS, +1, exclude="b1") == ("heat-pump", "b2", "genset")


def test_downward_backups_are_ordered_by_demand_rate_and_leave_out_loads() -> None:
    # A load here can only be curtailed: it has nothing to give downward.
    assert merit_order(REGISTRY, KINDS, -1, exclude="b1") == ("genset", "b2")


def test_unregistered_and_unknown_assets_are_never_backups() -> None:
    assert (
        merit_order({"b1": (1.0, 1.0), "ghost": (0.0, 0.0)}, {"b1": "battery"}, +1, exclude="b1")
        == ()
    )


def test_equal_rates_fall_back_to_the_name() -> None:
    assert merit_order(
        {"z": (1.0, 5.0), "a": (1.0, 5.0), "me": (1.0, 1.0)},
        {"z": "battery", "a": "battery", "me": "battery"},
        +1,
        exclude="me",
    ) == ("a", "z")


def _trade_admission(cover: bool) -> tuple[str, ...]:
    offer = Offer("o1", "b1", T0, T0 + 60, 0.05, 35.0)
    limits = battery()
    states = {name: AssetState(kind, Headroom(5.0, 5.0)) for name, kind in KINDS.items()}
    states["b1"] = AssetState("battery", Headroom.of_battery(limits, 0.5), limits, 0.5)
    admission = admit_trade(
        TradeRequest("t1", "o1", "b1", T0, 0.03, 35.0 * 0.03),
        market_enabled=True,
        registry=REGISTRY,
        offers={"o1": offer},
        traded_kwh={},
        assets=states,
        ledger=Ledger([], {}),
        slot_seconds=60,
        now=T0 + 1,
        cover_with_other_assets=cover,
    )
    assert admission.status is AckStatus.ACCEPTED
    assert admission.commitment is not None
    # The offer's asset carries the trade in full; backups hold none of it in admission.
    assert admission.commitment.shares == (("b1", 1.0),)
    return admission.commitment.backups


def test_a_trade_gets_the_merit_order_as_backups_unless_the_site_turns_it_off() -> None:
    assert _trade_admission(cover=True) == ("heat-pump", "b2", "genset")
    assert _trade_admission(cover=False) == ()


def battery_views(**available: bool) -> dict[str, DeviceView]:
    return {name: battery_view(battery(name), 0.5, up, 1.0) for name, up in available.items()}


def test_lost_asset_moves_everything_to_the_cheapest_backup() -> None:
    c = commitment(kwh=0.03, end=T0 + 36, backups=("b2", "b3"))  # 3 kW
    result = plan([c], {}, battery_views(b1=False, b2=True, b3=True), T0)
    assert "b1" not in result.setpoints
    assert math.isclose(result.setpoints["b2"], 3.0)
    assert math.isclose(result.allocations["b2"]["c1"], 3.0)
    assert result.setpoints["b3"] == 0.0
    assert "c1" not in result.allocations["b3"]


def test_what_the_cheapest_backup_cannot_take_goes_to_the_next() -> None:
    c = commitment(kwh=0.08, end=T0 + 36, backups=("b2", "b3"))  # 8 kW, 5 kW per battery
    result = plan([c], {}, battery_views(b1=False, b2=True, b3=True), T0)
    assert math.isclose(result.setpoints["b2"], 5.0)
    assert math.isclose(result.setpoints["b3"], 3.0)
    assert math.isclose(result.allocations["b3"]["c1"], 3.0)


def test_a_clipped_share_asset_is_topped_up_by_the_backup() -> None:
    c = commitment(kwh=0.07, end=T0 + 36, backups=("b2",))  # 7 kW on a 5-kW battery
    result = plan([c], {}, battery_views(b1=True, b2=True), T0)
    assert result.setpoints["b1"] == 5.0
    assert math.isclose(result.setpoints["b2"], 2.0)
    assert math.isclose(result.allocations["b2"]["c1"], 2.0)


def test_a_generator_held_back_by_its_ramp_catches_up_by_itself() -> None:
    # Starting: this tick it may only reach its minimum, but it can run 10 kW given time.
    genset = GeneratorLimits("g", 1.0, 10.0, ramp_kw_per_s=5.0)
    views = {"g": DeviceView(generator_feasible(genset, 0.0, 1.0)), **battery_views(b2=True)}
    c = commitment(kwh=0.05, end=T0 + 36, shares=(("g", 1.0),), backups=("b2",))  # 5 kW
    result = plan([c], {}, views, T0)
    assert result.setpoints == {"g": 1.0, "b2": 0.0}


def test_a_generator_at_its_rating_is_topped_up() -> None:
    genset = GeneratorLimits("g", 1.0, 4.0, ramp_kw_per_s=5.0)
    views = {"g": DeviceView(generator_feasible(genset, 4.0, 1.0)), **battery_views(b2=True)}
    c = commitment(kwh=0.05, end=T0 + 36, shares=(("g", 1.0),), backups=("b2",))  # 5 kW
    result = plan([c], {}, views, T0)
    assert result.setpoints["g"] == 4.0
    assert math.isclose(result.setpoints["b2"], 1.0)


def test_backups_are_left_alone_while_the_asset_can_deliver() -> None:
    c = commitment(kwh=0.03, end=T0 + 36, backups=("b2",))
    result = plan([c], {}, battery_views(b1=True, b2=True), T0)
    assert result.setpoints == {"b1": 3.0, "b2": 0.0}
    assert result.allocations["b2"] == {}


def test_a_backup_serves_its_own_commitments_first() -> None:
    lost = commitment("lost", kwh=0.05, end=T0 + 36, backups=("b2",))  # 5 kW
    own = commitment("own", kwh=0.04, end=T0 + 36, shares=(("b2", 1.0),))  # 4 kW
    result = plan([lost, own], {}, battery_views(b1=False, b2=True), T0)
    assert math.isclose(result.setpoints["b2"], 5.0)
    assert math.isclose(result.allocations["b2"]["own"], 4.0)
    assert math.isclose(result.allocations["b2"]["lost"], 1.0)


def test_opposite_trades_lost_together_net_on_their_backup() -> None:
    # A battery sold both ways (as the balancing agent buys) is lost: 8 kW up and 6 kW down.
    # The running generator backing both up only has to move by the difference, which its
    # ramp allows this tick, though neither alone would fit.
    genset = GeneratorLimits("g", 1.0, 10.0, ramp_kw_per_s=3.0)
    views = {"g": DeviceView(generator_feasible(genset, 5.0, 1.0)), **battery_views(b1=False)}
    up = commitment("up", kwh=0.08, end=T0 + 36, backups=("g",))
    down = commitment("down", kwh=-0.06, end=T0 + 36, backups=("g",))
    own = commitment("own", kwh=0.05, end=T0 + 36, shares=(("g", 1.0),))
    result = plan([down, up, own], {}, views, T0)
    assert math.isclose(result.setpoints["g"], 7.0)
    allocations = result.allocations["g"]
    assert math.isclose(allocations["up"], 8.0)
    assert math.isclose(allocations["down"], -6.0)
    assert math.isclose(allocations["own"], 5.0)


def test_only_the_side_that_hits_the_limit_is_cut() -> None:
    # The same, but the generator can only reach 6 kW this tick: the upward trade is cut by
    # 1 kW (and goes on to the next backup), the downward one keeps all it asked.
    genset = GeneratorLimits("g", 1.0, 10.0, ramp_kw_per_s=1.0)
    views = {
        "g": DeviceView(generator_feasible(genset, 5.0, 1.0)),
        **battery_views(b1=False, b2=True),
    }
    up = commitment("up", kwh=0.08, end=T0 + 36, backups=("g", "b2"))
    down = commitment("down", kwh=-0.06, end=T0 + 36, backups=("g",))
    own = commitment("own", kwh=0.05, end=T0 + 36, shares=(("g", 1.0),))
    result = plan([down, up, own], {}, views, T0)
    assert math.isclose(result.setpoints["g"], 6.0)
    assert math.isclose(result.allocations["g"]["down"], -6.0)
    assert math.isclose(result.allocations["g"]["up"], 7.0)
    assert math.isclose(result.allocations["b2"]["up"], 1.0)
    assert math.isclose(result.setpoints["b2"], 1.0)


def test_a_backup_never_overshoots_on_a_step_it_cannot_split() -> None:
    # A relay load would curtail its whole 4 kW to cover 1 kW: it is skipped.
    relay = DeviceView(load_feasible(LoadLimits("plug", 1.0, relay=True), 4.0))
    views = {**battery_views(b1=False, b2=True), "plug": relay}
    c = commitment(kwh=0.01, end=T0 + 36, backups=("plug", "b2"))  # 1 kW
    result = plan([c], {}, views, T0)
    assert result.setpoints["plug"] == -4.0  # left at its demand
    assert math.isclose(result.setpoints["b2"], 1.0)


def test_delivered_energy_counts_whoever_delivered_it() -> None:
    # Half the energy is in (from the backup, say): the rest over the time left.
    c = commitment(kwh=0.02, end=T0 + 36, backups=("b2",))
    result = plan(
        [c], {"c1": Progress(delivered_kwh=0.01)}, battery_views(b1=False, b2=True), T0 + 18
    )
    assert math.isclose(result.setpoints["b2"], 2.0)


@st.composite
def backup_view(draw: st.DrawFn) -> DeviceView:
    kind = draw(st.sampled_from(["battery", "load", "relay", "generator", "lost"]))
    if kind == "battery":
        limits = battery(
            "x", max_charge_kw=draw(st.floats(0.5, 10)), max_discharge_kw=draw(st.floats(0.5, 10))
        )
        return battery_view(limits, draw(st.floats(0, 1)), True, 1.0)
    if kind in {"load", "relay"}:
        return DeviceView(
            load_feasible(
                LoadLimits("l", draw(st.floats(0, 1)), kind == "relay"), draw(st.floats(0, 10))
            )
        )
    if kind == "generator":
        low = draw(st.floats(0, 3))
        gen = GeneratorLimits("g", low, low + draw(st.floats(0.5, 10)), draw(st.floats(0.1, 5)))
        return DeviceView(generator_feasible(gen, draw(st.floats(0, 15)), 1.0))
    return DeviceView(None)


def _room(feasible: Feasible, p: float, direction: float) -> bool:
    """Whether the device could still move from p in `direction` without overshooting 1 W."""
    return abs(feasible.toward(p, p + math.copysign(1e-3, direction)) - p) > 1e-9


@settings(max_examples=examples(300))
@given(
    primary=backup_view(),
    backups=st.lists(backup_view(), min_size=1, max_size=4),
    kwh=st.floats(-0.2, 0.2).filter(lambda e: abs(e) > 1e-4),
    own=st.lists(st.floats(-0.1, 0.1), min_size=5, max_size=5),
)
def test_merit_order_fills_backups_in_order_and_inside_their_limits(
    primary: DeviceView,
    backups: list[DeviceView],
    kwh: float,
    own: list[float],
) -> None:
    views = {"p": primary, **{f"k{i}": v for i, v in enumerate(backups)}}
    names = tuple(f"k{i}" for i in range(len(backups)))
    traded = commitment("t", kwh=kwh, end=T0 + 36, shares=(("p", 1.0),), backups=names)
    # Each backup may have a commitment of its own, which it serves first.
    others = [
        commitment(f"own-{n}", kwh=e, end=T0 + 36, shares=((n, 1.0),))
        for n, e in zip(names, own, strict=False)
        if abs(e) > 1e-6
    ]
    result = plan([traded, *others], {}, views, T0)
    direction = math.copysign(1.0, kwh)
    earlier_full = True
    for name, view in views.items():
        if view.feasible is None:
            assert name not in result.setpoints
            continue
        p = result.setpoints[name]
        assert view.feasible.allows(p), (name, p, view.feasible)
        took = result.allocations[name].get("t", 0.0)
        if name == "p" or any(c.id != "t" and name in c.assets for c in others):
            assert math.isclose(
                sum(result.allocations[name].values()), p - view.feasible.baseline_kw, abs_tol=1e-6
            )
        else:
            # Only the backup's move counts: where it stood for nobody (a generator that
            # cannot reach its baseline this tick) is not the commitment's doing.
            assert math.isclose(
                took, p - view.feasible.clip(view.feasible.baseline_kw), abs_tol=1e-6
            )
        if name == "p":
            continue
        # A backup never works against the commitment, and is only used once every
        # cheaper one that could still move that way has done so.
        assert took * direction >= 0
        if took:
            assert earlier_full, (name, result)
        if _room(view.feasible, p, direction):
            earlier_full = False
    # Backups never take more than the share asset left uncovered.
    asked = abs(kwh) / (36 / 3600)
    by_primary = result.allocations.get("p", {}).get("t", 0.0) * direction
    covered = sum(a.get("t", 0.0) for n, a in result.allocations.items() if n != "p")
    assert covered * direction <= max(0.0, asked - by_primary) + 1e-6


@settings(max_examples=examples(500))
@given(view=backup_view(), p_from_seed=st.floats(0, 1), target=st.floats(-30, 30))
def test_toward_stays_allowed_and_never_passes_the_target(
    view: DeviceView,
    p_from_seed: float,
    target: float,
) -> None:
    if view.feasible is None:
        return
    f = view.feasible
    p_from = f.clip(f.p_min + p_from_seed * (f.p_max - f.p_min))
    p = f.toward(p_from, target)
    assert f.allows(p)
    assert min(p_from, target) - 1e-9 <= p <= max(p_from, target) + 1e-9


@settings(max_examples=examples(300))
@given(
    views=st.lists(backup_view(), min_size=2, max_size=5),
    trades=st.lists(
        st.tuples(st.floats(-0.1, 0.1).filter(lambda e: abs(e) > 1e-4), st.permutations(range(5))),
        min_size=1,
        max_size=4,
    ),
)
def test_many_lost_and_clipped_trades_stay_inside_every_limit(
    views: list[DeviceView],
    trades: list[tuple[float, list[int]]],
) -> None:
    names = [f"d{i}" for i in range(len(views))]
    devices = dict(zip(names, views, strict=True))
    commitments = []
    for k, (kwh, order) in enumerate(trades):
        ranked = [names[i] for i in order if i < len(names)]
        commitments.append(
            commitment(
                f"t{k}", kwh=kwh, end=T0 + 36, shares=((ranked[0], 1.0),), backups=tuple(ranked[1:])
            )
        )
    result = plan(commitments, {}, devices, T0)
    for name, view in devices.items():
        if view.feasible is None:
            assert name not in result.setpoints
            continue
        assert view.feasible.allows(result.setpoints[name]), (name, result)
    for c in commitments:
        asked = c.accepted_kwh / (36 / 3600)
        direction = math.copysign(1.0, asked)
        by_backups = [result.allocations.get(b, {}).get(c.id, 0.0) for b in c.backups]
        # Backups never work against a trade, and never give it more than it asked for.
        assert all(kw * direction >= -1e-9 for kw in by_backups)
        assert sum(by_backups) * direction <= abs(asked) + 1e-6
