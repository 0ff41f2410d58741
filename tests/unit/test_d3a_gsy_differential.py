"""The built-in D3A agent against gsy-e's own BalancingMarket and BalancingAgent.

The same random books and spot trades go to the built-in agent (d3a.BalancingAgent) and to
gsy-e's classes behind the bridge `flexedge market --engine gsy-e` uses (gsy_engine), and they
must make the same trades (offer, energy, price) and leave the same unmatched energy. gsy-e's
classes run in-process and open no socket. Residual ids differ (gsy-e: uuid4; built-in: X~r1),
so offers are compared by lineage: a residual is its offer's name with a prime.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, cast

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from flexedge.errors import FlexedgeError
from flexedge.simulators.market.d3a import BalancingAgent, BookOffer, Clearing
from flexedge.simulators.market.engines import D3aEngine, d3a_engine
from flexedge.simulators.market.gsy_engine import GSY_INSTALL
from tests.support.gsy import IMPORT_WARNINGS, require_gsy
from tests.support.properties import examples

SLOT = 1_800_000_000.0
NEXT_SLOT = SLOT + 900
REGISTRY = {"battery-1": (33.0, 35.0), "heat-pump": (30.0, 36.0), "genset": (0.0, 40.0)}
ASSETS = [*REGISTRY, "plug"]  # the plug is not in the market's registry


pytestmark = IMPORT_WARNINGS


@pytest.fixture(scope="module")
def gsy_e() -> Iterator[None]:
    require_gsy()
    from gsy_e.gsy_e_core.device_registry import DeviceRegistry

    saved = DeviceRegistry.REGISTRY
    yield
    DeviceRegistry.REGISTRY = saved


def _site_offer(index: int, asset: str, slot: float, energy_kwh: float, rate: float) -> BookOffer:
    # As the site publishes it: price_ct = rate x |energy| to 6 decimals.
    return BookOffer(
        f"site.{asset}.{index}", asset, slot, energy_kwh, rate, "", round(rate * abs(energy_kwh), 6)
    )


# Offers as the site sizes them (0.1 Wh steps), and now and then one below gsy-e's tolerance.
SIZED = st.integers(1, 500).map(lambda k: k * 1e-4)
ENERGY = st.one_of(SIZED, SIZED, SIZED, st.integers(1, 30).map(lambda k: k * 1e-6))
RATE = st.one_of(st.sampled_from([20.0, 30.0, 33.0, 35.0, 40.0]), st.integers(100, 6000))
OFFER = st.tuples(
    st.just("offer"),
    st.sampled_from(ASSETS),
    st.sampled_from([SLOT, SLOT, NEXT_SLOT]),
    st.sampled_from([1, -1]),
    ENERGY,
    RATE.map(lambda r: r / 100 if r >= 100 else r),
)
SPOT = st.tuples(
    st.just("spot"),
    st.sampled_from(["buy", "buy", "sell"]),
    st.sampled_from([SLOT, SLOT, SLOT, NEXT_SLOT]),
    # Small ones take offers partly, large ones empty the book.
    st.one_of(
        st.integers(1, 500).map(lambda k: k * 1e-4), st.integers(1, 300).map(lambda k: k * 1e-3)
    ),
)
REPEAT = st.tuples(st.just("repeat"), st.integers(0, 50))  # a redelivered offer
MIXED = st.lists(st.one_of(OFFER, OFFER, SPOT, REPEAT), min_size=3, max_size=25)
# A book, then small buys in its slot: partial trades, then trades on the residuals.
SMALL_BUY = st.tuples(st.just("spot"), st.just("buy"), st.just(SLOT), SIZED)
BOOK_THEN_BUYS = st.tuples(
    st.lists(OFFER.map(lambda o: (*o[:2], SLOT, *o[3:])), min_size=1, max_size=8),
    st.lists(SMALL_BUY, min_size=2, max_size=6),
).map(lambda parts: parts[0] + parts[1])
EVENTS = st.one_of(MIXED, BOOK_THEN_BUYS)
RATIO = st.one_of(st.just(0.2), st.floats(0.05, 1.0))


class Lineage:
    """Names offers the same way in both engines: a residual is its offer's name + "'"."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def name(self, offer_id: str) -> str:
        return self.names.get(offer_id, offer_id)

    def fills(self, clearing: Clearing) -> list[tuple[str, float, float, float | None]]:
        out = []
        for fill in clearing.fills:
            name = self.name(fill.offer.id)
            rest = fill.residual
            if rest is not None:
                self.names[rest.id] = name + "'"
            out.append(
                (name, fill.energy_kwh, fill.price_ct, None if rest is None else rest.energy_kwh)
            )
        return out


def _play(engine: D3aEngine, events: list[tuple[Any, ...]]) -> list[object]:
    lineage = Lineage()
    posted: list[BookOffer] = []
    seen: list[object] = []
    for step in events:
        if step[0] == "offer":
            _, asset, slot, sign, energy, rate = step
            posted.append(_site_offer(len(posted), asset, slot, sign * energy, rate))
            seen.append(("posted", engine.add_offer(posted[-1])))
        elif step[0] == "repeat" and posted:
            seen.append(("posted", engine.add_offer(posted[step[1] % len(posted)])))
        elif step[0] == "spot":
            _, side, slot, energy = step
            clearing = engine.follow_spot_trade(energy, side, slot)
            if clearing is None:
                seen.append(None)
            else:
                seen.append(
                    (lineage.fills(clearing), clearing.unmet_up_kwh, clearing.unmet_down_kwh)
                )
    return seen


def _same(built_in: object, gsy: object) -> bool:
    """Equal, with floats equal to within rounding (1e-9 kWh, 1e-9 ct)."""
    if isinstance(built_in, float) and isinstance(gsy, float):
        return abs(built_in - gsy) <= 1e-9
    if isinstance(built_in, list | tuple) and isinstance(gsy, list | tuple):
        return len(built_in) == len(gsy) and all(map(_same, built_in, gsy))
    return built_in == gsy


def d3a_engine_for(ratio: float) -> D3aEngine:
    from flexedge.simulators.market.gsy_engine import GsyBalancing

    return GsyBalancing("site", ratio, REGISTRY)


@settings(max_examples=examples(200), deadline=None)
@given(events=EVENTS, ratio=RATIO)
def test_built_in_agent_trades_as_gsy_e(
    gsy_e: None, events: list[tuple[Any, ...]], ratio: float
) -> None:
    built_in = _play(BalancingAgent(ratio, REGISTRY), events)
    gsy = _play(d3a_engine_for(ratio), events)
    for step, (ours, theirs) in enumerate(zip(built_in, gsy, strict=True)):
        assert _same(ours, theirs), f"event {step}: built-in {ours!r}, gsy-e {theirs!r}"
    _count_cases(built_in)


def _count_cases(results: list[object]) -> None:
    """What the example reached (shown by --hypothesis-show-statistics)."""
    for result in results:
        if result is None:
            event("a spot trade not followed")
        elif isinstance(result, tuple) and result[0] == "posted":
            if result[1] is not None:
                event("an offer refused")
        elif isinstance(result, tuple):
            fills, up, down = result
            if any(rest is not None for *_, rest in fills):
                event("a partial trade")
            if any(name.endswith("'") for name, *_ in fills):
                event("a trade on a residual id")
            if up > 2e-5 or down > 2e-5:
                event("energy carried over")


def test_differential_cases_cover_partial_residual_refused_and_carried(gsy_e: None) -> None:
    """One hand-made book with every kind of case the random ones are meant to reach."""
    events: list[tuple[Any, ...]] = [
        ("offer", "battery-1", SLOT, -1, 0.03, 33.0),
        ("offer", "battery-1", SLOT, 1, 0.02, 35.0),
        ("offer", "genset", SLOT, 1, 0.05, 30.0),
        ("offer", "plug", SLOT, 1, 0.05, 1.0),  # refused: not registered
        ("spot", "buy", SLOT, 0.1),  # partial trades
        ("spot", "sell", SLOT, 0.1),  # not followed
        ("spot", "buy", SLOT, 0.2),  # residual trades
        ("repeat", 0),
        ("spot", "buy", SLOT, 0.3),  # only a residual left: the rest is carried
    ]
    built_in = _play(BalancingAgent(0.2, REGISTRY), events)
    assert _same(built_in, _play(d3a_engine_for(0.2), events))
    assert built_in[3] == ("posted", "asset 'plug' is not in the market's registry")
    assert built_in[7] == ("posted", None)  # the repeat changes nothing
    assert built_in[5] is None
    first, _, _ = cast("tuple[Any, float, float]", built_in[4])
    assert [(n, rest is not None) for n, _, _, rest in first] == [
        ("site.battery-1.0", True),
        ("site.genset.2", True),
    ]
    third, up, down = cast("tuple[Any, float, float]", built_in[6])
    assert [n for n, *_ in third] == ["site.battery-1.0'", "site.genset.2'", "site.battery-1.1"]
    last, up, down = cast("tuple[Any, float, float]", built_in[8])
    assert [n for n, *_ in last] == ["site.battery-1.1'"]
    assert up == pytest.approx(0.05) and down == pytest.approx(0.09)


def test_the_bridge_keeps_an_offer_gsy_e_would_delete(gsy_e: None) -> None:
    from gsy_e.gsy_e_core.exceptions import InvalidBalancingTradeException
    from gsy_framework.data_classes import TraderDetails

    from flexedge.simulators.market.gsy_engine import GsyBalancing

    bridge = GsyBalancing("site", 0.2, REGISTRY)
    bridge.add_offer(_site_offer(0, "battery-1", SLOT, 0.02, 35.0))
    market = bridge.slot(SLOT).market
    buyer = TraderDetails("site", "site")
    # gsy-e pops the offer before it checks the sign: with the guard, it stays.
    with pytest.raises(InvalidBalancingTradeException):
        market.accept_offer("site.battery-1.0", buyer, energy=-0.01)
    assert "site.battery-1.0" in market.offers
    # Without energy gsy-e raises TypeError after popping it; the guard buys all of it.
    trade = market.accept_offer("site.battery-1.0", buyer)
    assert trade.traded_energy == 0.02 and trade.residual is None
    assert trade.trade_price == pytest.approx(0.7)


def test_gsy_e_engine_without_gsy_e_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flexedge.config.loader import EXAMPLE_SITE, load_site

    # A None in sys.modules makes importing that name raise ImportError.
    for name in [n for n in sys.modules if n.split(".")[0] in {"gsy_e", "gsy_framework"}]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "gsy_e", None)
    with pytest.raises(FlexedgeError) as caught:
        d3a_engine("gsy-e", load_site(EXAMPLE_SITE).config)
    assert GSY_INSTALL in str(caught.value)
    assert "pip install --no-deps ../shared/thirdparty/gsy/*.whl" in str(caught.value)
