"""A running site against gsy-e's own BalancingMarket and BalancingAgent over MQTT.

`flexedge sim` and `flexedge run` as processes, Mosquitto, and the market simulator with
`--engine gsy-e`: gsy-e's agent follows the scenario's spot trades and buys the battery's
offers partly, then what is left of them under the ids gsy-e gave the rest. Every trade must
be accepted and delivered within 2 % (the site's delivery tolerance).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from flexedge.config.loader import load_site
from flexedge.simulators.market.ledger import scorecard_table
from flexedge.simulators.market.runner import MarketSim
from flexedge.simulators.market.scenario import load_scenario
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.gsy import IMPORT_WARNINGS, require_gsy
from tests.support.site_process import running_site

# 20-s slots: the battery offers 5 kW x 20 s = 0.0278 kWh each way. 0.2 x each buy is taken
# up and down: 0.004, then 0.006 and 0.004 of what is left, so every offer is split three
# times and the last two trades of each direction name gsy-e's residual ids.
INTEROP = """
name: gsy-interop
steps:
  - {slot: 0, second: 1, spot_trade: {asset: battery-1, side: buy, energy_kwh: 0.02, rate: 28}}
  - {second: 3, spot_trade: {asset: battery-1, side: sell, energy_kwh: 0.02, rate: 30}}
  - {second: 4, spot_trade: {asset: battery-1, side: buy, energy_kwh: 0.03, rate: 28}}
  - {second: 6, spot_trade: {asset: battery-1, side: buy, energy_kwh: 0.02, rate: 28}}
"""
pytestmark = IMPORT_WARNINGS
TRADE_LINE = re.compile(
    r"balancing trade (?P<id>bt-\w+): (?P<kwh>[+-][\d.]+) kWh of (?P<offer>\S+) at "
    r"[\d.]+ ct/kWh(?:, the rest is (?P<rest>\S+))?"
)


def test_gsy_e_market_trades_partial_offers_and_residuals_with_a_live_site(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    require_gsy()
    from flexedge.simulators.market.gsy_engine import GsyBalancing

    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(INTEROP, encoding="utf-8")
    with running_site(tmp_path, broker, slot_seconds=20) as running:
        site = load_site(running.site_file)
        _, steps = load_scenario(scenario, site.config)
        lines: list[str] = []
        market = MarketSim(site, steps, grace_s=8, say=lines.append, engine="gsy-e")
        assert isinstance(market.agent, GsyBalancing)
        ledger = asyncio.run(market.run())
    story = "\n".join(lines)
    trades = [m.groupdict() for m in map(TRADE_LINE.search, lines) if m]
    assert len(trades) == 6, story
    assert story.count("follows only spot trades the site buys") == 1, story
    # Each direction: the site's offer, then the rest of it twice, by gsy-e's ids.
    for sign in "-+":
        chain = [t for t in trades if t["kwh"].startswith(sign)]
        assert [abs(float(t["kwh"])) for t in chain] == [0.004, 0.006, 0.004], story
        assert all(t["rest"] for t in chain), story
        assert chain[1]["offer"] == chain[0]["rest"], story
        assert chain[2]["offer"] == chain[1]["rest"], story
    story += "\n" + scorecard_table(ledger)
    rejected = []
    for t in trades:
        sent = ledger.sent[t["id"]]
        if sent.ack is None or sent.ack.get("status") != "accepted":
            rejected.append(f"{sent.id} on {t['offer']}: {sent.ack}")
            continue
        assert sent.report is not None, f"no report for {sent.id}\n{story}"
        accepted, delivered = sent.accepted_kwh or 0.0, sent.delivered_kwh or 0.0
        assert accepted == pytest.approx(float(t["kwh"]), abs=1e-6), story
        assert abs(delivered - accepted) <= 0.02 * abs(accepted), (sent.report, story)
    assert not rejected, "trades not accepted:\n" + "\n".join(rejected) + f"\n{story}"
    assert ledger.complete(), story
