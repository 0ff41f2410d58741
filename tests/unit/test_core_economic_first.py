"""Economic control before balancing, whatever the order they arrive in (Power TAC's rule):
admission, dispatch priority on the load, and the reports of what falls short, on plain data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexedge.controller.core.admission import AssetState, Ledger
from flexedge.controller.core.capability import Headroom
from flexedge.controller.core.control_admission import (
    ControlRequest,
    EconomicControl,
    StandingOrder,
    admit_control,
    admit_economic_control,
)
from flexedge.controller.core.dispatch import DeviceView, plan, share_on_device, spread_clip
from flexedge.controller.core.kinds import Feasible, LoadLimits, load_feasible
from flexedge.controller.core.metering import Sample, attribute
from flexedge.controller.core.model import Admission, Commitment, Progress, RefType
from flexedge.controller.core.orders import economic_curtailment_kwh
from flexedge.controller.core.reports import build_report, served_first_over
from tests.support.core_fixtures import T0
from tests.support.properties import examples

SLOT_S = 360.0
HOURS = SLOT_S / 3600.0


def load(usage_kw: float, share: float) -> AssetState:
    return AssetState("flexible_load", Headroom(share * usage_kw, 0.0), usage_kw=usage_kw)


def load_view(usage_kw: float, share: float) -> DeviceView:
    return DeviceView(load_feasible(LoadLimits("l1", share, relay=False), usage_kw))


def admit(
    message: ControlRequest | EconomicControl,
    state: AssetState,
    ledger: list[Commitment],
    order_ratio: float = 1.0,
) -> Admission:
    assets = {"l1": state}
    if isinstance(message, EconomicControl):
        return admit_economic_control(
            message,
            tariffs={"t": ("l1",)},
            assets=assets,
            ledger=Ledger(ledger, {}),
            slot_seconds=SLOT_S,
            now=T0,
        )
    order = StandingOrder("t", ("l1",), order_ratio, 0.1)
    return admit_control(
        message,
        orders={"t": {"up": order}},
        assets=assets,
        ledger=Ledger(ledger, {}),
        slot_seconds=SLOT_S,
        now=T0,
    )


def economic(ratio: float) -> EconomicControl:
    return EconomicControl("ec", "t", T0, ratio)


def balancing(n: int, kwh: float) -> ControlRequest:
    return ControlRequest(f"bc{n}", "t", T0, kwh, payment=1.0)


def admit_all(
    messages: list[ControlRequest | EconomicControl], state: AssetState, order_ratio: float = 1.0
) -> tuple[list[Commitment], list[Admission]]:
    ledger: list[Commitment] = []
    admissions: list[Admission] = []
    for message in messages:
        admission = admit(message, state, ledger, order_ratio)
        admissions.append(admission)
        if admission.commitment is not None:
            ledger.append(admission.commitment)
    return ledger, admissions


def test_without_economic_control_sharing_on_a_device_is_pro_rata_as_before() -> None:
    feasible = Feasible(-4.0, -2.0, baseline_kw=-4.0)
    wanted = {"a": 1.5, "b": 1.5}
    assert share_on_device(wanted, frozenset(), feasible, 2.0) == spread_clip(wanted, 2.0)


def test_economic_control_takes_its_share_of_the_load_first() -> None:
    feasible = Feasible(-4.0, -2.0, baseline_kw=-4.0)  # 2 kW curtailable
    shared = share_on_device({"ec": 1.0, "bc": 2.0}, frozenset({"ec"}), feasible, 2.0)
    assert shared == pytest.approx({"ec": 1.0, "bc": 1.0})
    # Asked more than the load can shed, the economic control gets all the load can do.
    shared = share_on_device({"ec": 3.0, "bc": 2.0}, frozenset({"ec"}), feasible, 2.0)
    assert shared == pytest.approx({"ec": 2.0, "bc": 0.0})


def test_balancing_admitted_first_gets_what_the_economic_control_leaves() -> None:
    state = load(usage_kw=4.0, share=0.5)  # 2 kW curtailable, 0.2 kWh in the slot
    ledger, admissions = admit_all([balancing(1, 0.2), economic(0.25)], state)
    bc, ec = ledger
    assert bc.accepted_kwh == pytest.approx(0.2)  # acknowledged before: it stays
    assert ec.accepted_kwh == pytest.approx(0.25 * 4.0 * HOURS)  # its whole share of usage
    reason = admissions[1].reason
    assert "takes precedence" in reason and "cm-bc1" in reason and "l1" in reason
    result = plan(ledger, {}, {"l1": load_view(4.0, 0.5)}, T0)
    assert result.allocations["l1"] == pytest.approx({ec.id: 1.0, bc.id: 1.0})
    assert result.setpoints["l1"] == pytest.approx(-2.0)  # all it may shed, no more


def test_economic_control_first_leaves_no_precedence_to_report() -> None:
    state = load(usage_kw=4.0, share=0.5)
    ledger, admissions = admit_all([economic(0.25), balancing(1, 0.2)], state)
    ec, bc = ledger
    assert admissions[0].reason == ""
    assert bc.accepted_kwh == pytest.approx(0.2 - ec.accepted_kwh)  # bounded at admission
    result = plan(ledger, {}, {"l1": load_view(4.0, 0.5)}, T0)
    assert result.allocations["l1"] == pytest.approx({ec.id: 1.0, bc.id: 1.0})


def run_slot(
    commitments: list[Commitment], view: DeviceView, tick_s: float = 10.0
) -> dict[str, Progress]:
    """Dispatch and meter the load through the slot, the load doing what it is told."""
    assert view.feasible is not None
    progress = {c.id: Progress() for c in commitments}
    windows = {c.id: (c.window_start, c.window_end) for c in commitments}
    now = T0
    while now < T0 + SLOT_S:
        result = plan(commitments, progress, {"l1": view}, now)
        delta = result.setpoints["l1"] - view.feasible.baseline_kw
        part = attribute(
            Sample(now, delta), Sample(now + tick_s, delta), windows, result.allocations["l1"], 60
        )
        for cid, kwh in part.energy_kwh.items():
            progress[cid].add("l1", kwh, part.covered_s[cid])
        now += tick_s
    return progress


def test_the_balancing_commitment_displaced_ends_partial_and_says_why() -> None:
    state = load(usage_kw=4.0, share=0.5)
    ledger, _ = admit_all([balancing(1, 0.2), economic(0.25)], state)
    bc, ec = ledger
    progress = run_slot(ledger, load_view(4.0, 0.5))
    ec_report = build_report(ec, progress[ec.id], {"l1": -4.0}, 0.02)
    bc_report = build_report(bc, progress[bc.id], {"l1": -4.0}, 0.02)
    assert ec_report.status == "delivered"
    assert ec_report.delivered_kwh == pytest.approx(ec.accepted_kwh, rel=1e-6)
    assert bc_report.status == "partial"
    assert bc_report.delivered_kwh == pytest.approx(0.2 - ec.accepted_kwh, rel=1e-6)
    assert served_first_over(bc, bc_report.status, ledger) == (ec.id,)
    assert served_first_over(ec, ec_report.status, ledger) == ()
    assert served_first_over(bc, "delivered", ledger) == ()


@settings(max_examples=examples(200), deadline=None)
@given(
    usage_kw=st.floats(min_value=0.5, max_value=50.0),
    share=st.floats(min_value=0.05, max_value=1.0),
    ratio=st.floats(min_value=0.01, max_value=1.5),
    order_ratio=st.floats(min_value=0.05, max_value=1.0),
    balancing_kwh=st.lists(st.floats(min_value=0.001, max_value=10.0), min_size=1, max_size=3),
    economic_at=st.integers(min_value=0, max_value=3),
)
def test_economic_share_is_order_independent_and_balancing_gets_the_rest(
    usage_kw: float,
    share: float,
    ratio: float,
    order_ratio: float,
    balancing_kwh: list[float],
    economic_at: int,
) -> None:
    messages: list[ControlRequest | EconomicControl] = [
        balancing(n, kwh) for n, kwh in enumerate(balancing_kwh)
    ]
    messages.insert(min(economic_at, len(messages)), economic(ratio))
    ledger, _ = admit_all(messages, load(usage_kw, share), order_ratio)
    result = plan(ledger, {}, {"l1": load_view(usage_kw, share)}, T0)
    allocated = result.allocations["l1"]
    curtailable_kw = share * usage_kw
    economic_kw = economic_curtailment_kwh(ratio, share, usage_kw * HOURS) / HOURS
    # Accepted energies are rounded to 1e-6 kWh, which is this many kW over the slot.
    tol = 1e-6 / HOURS + 1e-6 * curtailable_kw
    got = {c.ref_type: 0.0 for c in ledger}
    for c in ledger:
        got[c.ref_type] = got.get(c.ref_type, 0.0) + allocated.get(c.id, 0.0)
    assert got.get(RefType.ECONOMIC_CONTROL, 0.0) == pytest.approx(economic_kw, abs=tol)
    assert got.get(RefType.BALANCING_CONTROL, 0.0) <= curtailable_kw - economic_kw + tol
    assert result.setpoints["l1"] - (-usage_kw) <= curtailable_kw + tol
