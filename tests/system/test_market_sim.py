"""The market simulator: scenario files, D3A and Power TAC clearing, settlement, and a real run.

The clearing rules are pure functions tested with plain values; one integration test plays a
tiny scenario against the example site over Mosquitto, Modbus and the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from flexedge.cli import exit_codes
from flexedge.cli.main import main as cli_main
from flexedge.config.loader import EXAMPLE_SITE, load_site
from flexedge.config.schema import SiteConfig
from flexedge.errors import ConfigError, FlexedgeError
from flexedge.simulators.market.d3a import BalancingAgent, BookOffer, clear_balancing, trade_message
from flexedge.simulators.market.ledger import Ledger, Sent, paid, scorecard_table, settlement_table
from flexedge.simulators.market.powertac import (
    P_MINUS,
    P_PLUS,
    Order,
    cover_imbalance,
    order_capacity_kwh,
    plan_exercise,
    regulating_price,
)
from flexedge.simulators.market.runner import SCENARIOS, MarketSim
from flexedge.simulators.market.scenario import Fault, Imbalance, SpotTrade, load_scenario
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.harness import run, write_site_file
from tests.support.site_process import running_site

ROOT = Path(__file__).resolve().parents[2]
SLOT_START = 1_800_000_000.0


@pytest.fixture(scope="module")
def example() -> SiteConfig:
    return load_site(EXAMPLE_SITE).config


def _scenario(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- scenario files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            "steps:\n  - spot_trade: {asset: battery-1, side: buy, energy_kwh: -1, rate: 30}",
            "steps[0].spot_trade.energy_kwh",
            "greater than 0",
        ),
        (
            "steps:\n  - spot_trade: {asset: battery-1, side: lend, energy_kwh: 1, rate: 30}",
            "steps[0].spot_trade.side",
            "'buy' or 'sell'",
        ),
        ("steps:\n  - wait_slots: 1\n  - imbalance: {kwh: 0}", "steps[1].imbalance", "not be 0"),
        (
            "steps:\n  - economic_control: {tariff: tariff-1, curtailment_ratio: 1.5}",
            "steps[0].economic_control.curtailment_ratio",
            "less than or equal to 1",
        ),
        ("steps:\n  - imbalance: {kwh: 1}\n    wait_slots: 1", "steps[0]", "exactly one"),
        ("steps:\n  - spot_trad: {asset: battery-1}", "steps[0].spot_trad", "not permitted"),
        ("steps: []", "steps", "at least 1"),
        (
            "steps:\n  - spot_trade: {asset: pv-9, side: buy, energy_kwh: 1, rate: 30}",
            "steps[0].spot_trade.asset",
            "not a device",
        ),
        (
            "steps:\n  - {second: 1, imbalance: {kwh: 1}}\n  - imbalance: {tariff: t-9, kwh: 1}",
            "steps[1].imbalance.tariff",
            "not a tariff",
        ),
        ("steps:\n  - {second: 30, imbalance: {kwh: 1}}", "steps[0].second", "inside a slot"),
        (
            "steps:\n  - {slot: 2, imbalance: {kwh: 1}}\n  - {slot: 1, imbalance: {kwh: 1}}",
            "steps[1].slot",
            "before slot 2",
        ),
        (
            "steps:\n  - {second: 9, imbalance: {kwh: 1}}\n  - {second: 3, imbalance: {kwh: 1}}",
            "steps[1].second",
            "before the step before it",
        ),
        ("steps:\n  - fault: {device: battery-1}", "steps[0].fault", "clear: true or at least"),
        (
            "steps:\n  - fault: {device: battery-1, exception: NOT_A_CODE}",
            "steps[0].fault",
            "NOT_A_CODE",
        ),
        ("steps:\n  - fault: {device: pv-9, drop: true}", "steps[0].fault.device", "not a device"),
        (
            "steps:\n  - fault: {device: battery-1, latency_s: -1}",
            "steps[0].fault.latency_s",
            "greater than or equal to 0",
        ),
    ],
)
def test_scenario_errors_name_file_and_field(
    tmp_path: Path, example: SiteConfig, body: str, field: str, words: str
) -> None:
    path = _scenario(tmp_path, f"name: bad\n{body}\n")
    with pytest.raises(ConfigError) as caught:
        load_scenario(path, example)
    assert caught.value.source == str(path)
    assert caught.value.field == field
    assert words in caught.value.problem
    assert str(caught.value).startswith(f"{path}: {field}: ")


def test_scenario_that_is_not_a_mapping_or_missing(tmp_path: Path, example: SiteConfig) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_scenario(_scenario(tmp_path, "- a\n- b\n"), example)
    with pytest.raises(ConfigError, match="scenario file not found"):
        load_scenario(tmp_path / "nope.yaml", example)


def test_steps_are_placed_in_slots_and_seconds(tmp_path: Path, example: SiteConfig) -> None:
    path = _scenario(
        tmp_path,
        """
name: timing
steps:
  - {slot: 0, second: 3, spot_trade: {asset: battery-1, side: buy, energy_kwh: 1, rate: 30}}
  - {second: 5, imbalance: {kwh: 0.1}}
  - imbalance: {kwh: 0.2}
  - wait_slots: 2
  - {second: 4, economic_control: {tariff: tariff-1, curtailment_ratio: 0.5}}
  - {slot: 4, imbalance: {kwh: -0.1}}
""",
    )
    _, steps = load_scenario(path, example)
    assert [(s.index, s.slot, s.second, s.offset_s) for s in steps] == [
        (0, 0, 3.0, 3.0),
        (1, 0, 5.0, 5.0),
        (2, 0, 5.0, 5.0),
        (4, 2, 4.0, 64.0),
        (5, 4, 0.0, 120.0),
    ]
    assert isinstance(steps[0].action, SpotTrade)
    assert isinstance(steps[1].action, Imbalance)


@pytest.mark.parametrize(
    ("site", "scenario"), [("example", "example-day"), ("full-site", "full-site-day")]
)
def test_bundled_scenarios_fit_their_sites(site: str, scenario: str) -> None:
    config = load_site(ROOT / "flexedge" / "config" / "sites" / f"{site}.yaml").config
    _, steps = load_scenario(SCENARIOS / f"{scenario}.yaml", config)
    assert steps


def test_cli_reports_a_bad_scenario_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, "name: x\nsteps:\n  - imbalance: {kwh: 1, tariff: nope}\n")
    code = cli_main(
        ["market", "--config", str(EXAMPLE_SITE), "--scenario", str(path), "--mqtt", "127.0.0.1:9"]
    )
    assert code == exit_codes.CONFIG  # a scenario error is a configuration error: do not retry
    assert f"{path}: steps[0].imbalance.tariff: 'nope' is not a tariff" in capsys.readouterr().err


# -- D3A balancing agent ----------------------------------------------------------------------


def _offer(oid: str, energy: float, rate: float, slot: float = SLOT_START) -> BookOffer:
    return BookOffer(oid, f"asset-{oid}", slot, energy, rate)


REGISTRY = {f"asset-{oid}": (33.0, 35.0) for oid in ("a", "b", "c", "s", "d", "up", "down")}


def test_clearing_walks_offers_cheapest_first_and_takes_the_last_partly() -> None:
    offers = [_offer("b", 0.3, 30), _offer("a", 0.2, 25), _offer("c", 0.5, 40)]
    clearing = clear_balancing(offers, up_kwh=0.4, down_kwh=0)
    assert [(f.offer.id, f.energy_kwh) for f in clearing.fills] == [("a", 0.2), ("b", 0.2)]
    assert clearing.fills[1].price_ct == pytest.approx(30 * 0.2)
    # The rest of b is a new offer with a new id, at b's rate.
    rest = clearing.fills[1].residual
    assert rest is not None and rest.id == "b~r1" and rest.energy_kwh == pytest.approx(0.1)
    assert rest.signed_rate == 30 and clearing.fills[0].residual is None
    assert clearing.unmet_up_kwh == pytest.approx(0)


def test_demand_offers_go_highest_price_first_as_their_rate_is_negative() -> None:
    offers = [_offer("up", 0.1, 35), _offer("down", -0.3, 20), _offer("down2", -0.3, 33)]
    clearing = clear_balancing(offers, up_kwh=0.25, down_kwh=0.25)
    fills = {f.offer.id: f.energy_kwh for f in clearing.fills}
    # Trade energy is signed like the offer; -33 sorts before -20, so down2 goes first.
    assert fills == {"down2": -0.25, "up": 0.1}
    assert [f.offer.id for f in clearing.fills] == ["down2", "up"]
    assert clearing.fills[0].price_ct == pytest.approx(33 * 0.25)
    assert clearing.unmet_up_kwh == pytest.approx(0.15)
    assert clearing.unmet_down_kwh == 0


def test_equal_rates_clear_in_the_order_they_were_posted() -> None:
    offers = [_offer("b", 0.1, 30), _offer("a", 0.1, 30)]
    clearing = clear_balancing(offers, up_kwh=0.15, down_kwh=0)
    assert [f.offer.id for f in clearing.fills] == ["b", "a"]
    assert clearing.fills[1].energy_kwh == pytest.approx(0.05)


def test_agent_follows_only_buys_and_its_own_slot() -> None:
    agent = BalancingAgent(spot_trade_ratio=0.2, registry=REGISTRY)
    assert agent.add_offer(_offer("a", 1.0, 1, slot=SLOT_START - 900)) is None
    assert agent.add_offer(_offer("s", 0.5, 30)) is None
    assert agent.follow_spot_trade(1.0, "sell", SLOT_START) is None
    clearing = agent.follow_spot_trade(1.0, "buy", SLOT_START)
    assert clearing is not None
    assert [(f.offer.id, f.energy_kwh) for f in clearing.fills] == [("s", 0.2)]


def test_the_rest_of_an_offer_trades_under_its_new_id_and_unmatched_energy_carries() -> None:
    agent = BalancingAgent(spot_trade_ratio=0.2, registry=REGISTRY)
    agent.add_offer(_offer("s", 0.03, 35))
    agent.add_offer(_offer("d", -0.03, 33))
    first = agent.follow_spot_trade(0.1, "buy", SLOT_START)
    assert first is not None
    assert [f.offer.id for f in first.fills] == ["d", "s"]
    assert [f.energy_kwh for f in first.fills] == pytest.approx([-0.02, 0.02])
    assert sorted(agent.offers) == ["d~r1", "s~r1"]  # the original ids are gone
    message = trade_message(first.fills[0])
    assert message["v"] == 1 and message["type"] == "balancing_trade"
    assert message["offer_id"] == "d" and message["residual_offer_id"] == "d~r1"
    assert message["price_ct"] == pytest.approx(33 * 0.02)
    assert message["id"] != trade_message(first.fills[0])["id"]
    # 0.02 wanted each way, 0.01 left of each offer: 0.01 each way is carried ...
    second = agent.follow_spot_trade(0.1, "buy", SLOT_START)
    assert second is not None
    assert [f.offer.id for f in second.fills] == ["d~r1", "s~r1"]
    assert all(f.residual is None for f in second.fills)
    assert "residual_offer_id" not in trade_message(second.fills[0])
    assert second.unmet_up_kwh == pytest.approx(0.01)
    assert second.unmet_down_kwh == pytest.approx(0.01)
    # ... and added to the next spot trade of the slot: 0.01 + 0.2 x 0.05 = 0.02.
    agent.add_offer(_offer("up", 0.05, 35))
    third = agent.follow_spot_trade(0.05, "buy", SLOT_START)
    assert third is not None
    assert [f.offer.id for f in third.fills] == ["up"]
    assert third.fills[0].energy_kwh == pytest.approx(0.02)
    assert third.unmet_down_kwh == pytest.approx(0.02)


def test_the_market_refuses_unregistered_assets_and_repeats_revive_nothing() -> None:
    agent = BalancingAgent(spot_trade_ratio=1.0, registry=REGISTRY)
    stranger = BookOffer("x", "pv-9", SLOT_START, 0.5, 1)
    assert agent.add_offer(stranger) == "asset 'pv-9' is not in the market's registry"
    agent.add_offer(_offer("s", 0.5, 30))
    agent.follow_spot_trade(0.5, "buy", SLOT_START)
    agent.add_offer(_offer("s", 0.5, 30))  # a QoS 1 redelivery of the offer sold
    assert agent.offers == {}
    clearing = agent.follow_spot_trade(0.5, "buy", SLOT_START)
    assert clearing is not None and clearing.fills == ()


# -- Power TAC utility ------------------------------------------------------------------------

ORDERS = [
    Order("pricey-up", 1.5, 0.20),
    Order("cheap-up", 0.5, 0.05),
    Order("down", -0.5, -0.02),
    Order("mid-up", 2.0, 0.10),
]


def test_exercise_cheapest_first_matching_the_imbalance_direction() -> None:
    plan, unmet = plan_exercise(ORDERS, 1.0, {"cheap-up": 0.3, "mid-up": 0.5, "pricey-up": 1.0})
    assert [(e.tariff_id, e.kwh) for e in plan] == [
        ("cheap-up", 0.3),
        ("mid-up", 0.5),
        ("pricey-up", 0.2),
    ]
    assert plan[1].payment == pytest.approx(0.10 * 0.5)
    assert unmet == 0


def test_surplus_exercises_only_down_orders_and_reports_the_rest() -> None:
    plan, unmet = plan_exercise(ORDERS, -0.4, {"down": 0.1})
    assert [(e.tariff_id, e.kwh) for e in plan] == [("down", -0.1)]
    # Power TAC: a negative price is the broker paying for down-regulation.
    assert plan[0].payment == pytest.approx(-0.02 * 0.1)
    assert unmet == pytest.approx(-0.3)


def test_exercise_can_be_held_to_one_tariff_and_one_payment() -> None:
    plan, _ = plan_exercise(ORDERS, 0.2, tariff="pricey-up", payment_per_kwh=0.07)
    assert [(e.tariff_id, e.kwh) for e in plan] == [("pricey-up", 0.2)]
    assert plan[0].payment == pytest.approx(0.014)


def test_no_order_priced_above_the_regulating_price_is_used() -> None:
    # Power TAC's dummy order for the regulating market: dearer orders sort after it.
    plan, unmet = plan_exercise(ORDERS, 1.0, {"cheap-up": 0.3}, regulating_price=0.15)
    assert [e.tariff_id for e in plan] == ["cheap-up", "mid-up"]  # pricey-up (0.20) unused
    assert regulating_price(1.0) == pytest.approx(P_PLUS) == pytest.approx(0.185)
    assert regulating_price(-1.0) == pytest.approx(P_MINUS) == pytest.approx(-0.0725)
    # A down order priced -0.02 (the site pays 0.02 per kWh) is dearer than pMinus: unused.
    plan, unmet = plan_exercise(ORDERS, -0.4, regulating_price=P_MINUS)
    assert plan == [] and unmet == pytest.approx(-0.4)
    keen = Order("keen-down", -0.5, -0.09)
    plan, _ = plan_exercise([*ORDERS, keen], -0.4, {"keen-down": 0.1}, regulating_price=P_MINUS)
    assert [(e.tariff_id, e.kwh) for e in plan] == [("keen-down", -0.1)]


def test_orders_of_one_price_are_exercised_in_the_order_they_arrived() -> None:
    orders = [Order("z", 1.0, 0.1), Order("a", 1.0, 0.1)]
    plan, _ = plan_exercise(orders, 1.0, {"z": 0.4, "a": 1.0})
    assert [e.tariff_id for e in plan] == ["z", "a"]


def test_capacity_estimate_follows_the_exercise_ratio(example: SiteConfig) -> None:
    # Ratio 1.5 puts half of the battery's 5 kW discharge on offer: 2.5 kW for 36 s.
    order = Order("tariff-1", 1.5, 0.12)
    assert order_capacity_kwh(example, order, 0.0, 36.0) == pytest.approx(0.025)
    assert order_capacity_kwh(example, Order("tariff-1", 0.5, 0.1), 0, 36) == 0


def test_clipped_exercise_goes_on_to_the_next_order() -> None:
    acks = {"cheap-up": 0.1}  # the site can take only 0.1 kWh of the cheapest order
    sent: list[dict[str, Any]] = []

    async def send(payload: dict[str, Any]) -> Mapping[str, Any]:
        sent.append(payload)
        cap = acks.get(payload["tariff_id"], 10.0)
        taken = min(cap, payload["kwh"])
        return {
            "status": "clipped" if taken < payload["kwh"] else "accepted",
            "accepted_kwh": taken,
        }

    orders = {o.tariff_id: o for o in ORDERS}
    left = run(cover_imbalance(orders, 0.5, {}, send, SLOT_START))
    assert [(p["tariff_id"], p["kwh"]) for p in sent] == [("cheap-up", 0.5), ("mid-up", 0.4)]
    assert sent[0]["timeslot_start"] == "2027-01-15T08:00:00.000Z"
    assert left == 0


# -- settlement -------------------------------------------------------------------------------


def test_paid_is_pay_as_offer_capped_at_the_accepted_energy() -> None:
    assert paid(7.0, 0.2, 0.2, 0.1) == pytest.approx(3.5)
    assert paid(7.0, 0.2, 0.1, 0.5) == pytest.approx(3.5)  # clipped; over-delivery unpaid
    assert paid(7.0, -0.2, -0.2, 0.05) == 0  # the wrong way
    assert paid(7.0, 0.2, 0.0, 0.0) == 0


def test_a_commitment_without_its_report_fails_the_run() -> None:
    ledger = Ledger()
    ledger.record(Sent("st-1", "spot_trade", "d3a", 0, "battery-1", -0.1, 2.8, 0))
    ledger.record(Sent("bt-1", "balancing_trade", "d3a", 0, "battery-1 up offer", 0.02, 0.7, 0))
    assert ledger.sent["bt-1"].problem == "no ack"
    ledger.on_ack(
        {"ref": "bt-1", "status": "accepted", "commitment_id": "cm-bt-1", "accepted_kwh": 0.02}
    )
    assert not ledger.complete()  # every message needs its ack, a commitment its report
    assert "MISSING: st-1 (no ack), bt-1 (no delivery report)" in scorecard_table(ledger)
    ledger.on_report(
        {
            "commitment_id": "cm-bt-1",
            "ref": "bt-1",
            "accepted_kwh": 0.02,
            "delivered_kwh": 0.019,
            "status": "partial",
        }
    )
    assert not ledger.complete()
    assert "0.6650 ct" in settlement_table(ledger)
    ledger.on_ack({"ref": "st-1", "status": "rejected", "reason": "asset 'x' is unknown"})
    assert ledger.complete()
    assert "st-1: rejected: asset 'x' is unknown" in scorecard_table(ledger)


# -- a real run -------------------------------------------------------------------------------

TINY = """
name: tiny
steps:
  - slot: 0
    second: 1
    imbalance: {kwh: 0.002}
  - second: 2
    spot_trade: {asset: battery-1, side: buy, energy_kwh: 0.02, rate: 28}
"""


def test_market_sim_plays_both_markets_against_the_example_site(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    with running_site(tmp_path, broker, slot_seconds=10) as running:
        site = load_site(running.site_file)
        _, steps = load_scenario(_scenario(tmp_path, TINY), site.config)
        lines: list[str] = []
        ledger = run(MarketSim(site, steps, grace_s=8, say=lines.append).run())
    by_type: dict[str, list[Sent]] = {}
    for sent in ledger.sent.values():
        by_type.setdefault(sent.type, []).append(sent)
    trades = by_type["balancing_trade"]
    # 0.2 x 0.02 kWh bought up and down, each part of one of the battery's offers.
    assert sorted(t.requested_kwh or 0 for t in trades) == [-0.004, 0.004]
    story = "\n".join(lines)
    controls = by_type["balancing_control"]
    assert len(controls) == 1, story  # one order, room enough: one event covers it
    control = controls[0]
    assert control.requested_kwh == 0.002 and control.target == "tariff-1", story
    # Paid the regulating price (pPlus), not the order's own 0.12: the rule is printed.
    assert control.price == pytest.approx(P_PLUS * 0.002)
    assert "Power TAC payment rule: each exercised kWh is paid the regulating price" in story
    for sent in (*trades, control):
        assert sent.ack is not None and sent.ack["status"] == "accepted", story
        assert sent.report is not None, f"no report for {sent.id}\n{story}"
        assert sent.report["commitment_id"] == sent.ack["commitment_id"]
    # Every ack and report came before the run's own deadline (its grace after the last
    # window); how many seconds that took is the machine's business, bounded by the timeout.
    assert ledger.complete(), scorecard_table(ledger)


FAULTS = """
name: faults
steps:
  - slot: 0
    second: 1
    fault: {device: battery-1, latency_s: 0.2, frozen: true}
  - second: 3
    fault: {device: battery-1, clear: true}
"""


def test_fault_steps_switch_the_simulator_and_say_what_it_confirmed(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    with running_site(tmp_path, broker, slot_seconds=10, fault_control=True) as running:
        site = load_site(running.site_file)
        _, steps = load_scenario(_scenario(tmp_path, FAULTS), site.config)
        lines: list[str] = []
        run(MarketSim(site, steps, grace_s=1, say=lines.append).run())
    # What the lines say is the state the simulator itself confirmed.
    story = "\n".join(lines)
    assert "fault on battery-1: frozen, latency 0.2 s" in story, story
    assert "fault on battery-1: no faults" in story, story
    assert story.index("frozen, latency") < story.index("no faults")


def test_a_fault_step_without_a_simulator_listening_fails_the_run(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    raw = yaml.safe_load(EXAMPLE_SITE.read_text(encoding="utf-8"))
    raw["mqtt"] = {"host": broker.host, "port": broker.port}
    raw["site"] = "nobody-listens"
    site = load_site(write_site_file(tmp_path, raw))
    _, steps = load_scenario(_scenario(tmp_path, FAULTS), site.config)
    market = MarketSim(site, steps, grace_s=1, say=lambda _: None)
    fault = steps[0].action
    assert isinstance(fault, Fault)
    with pytest.raises(FlexedgeError, match="no simulator confirmed the fault on battery-1"):
        run(market._fault(fault))
