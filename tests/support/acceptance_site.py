"""The acceptance tests' site, market helpers and field-by-field checks
(tests/test_acceptance.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from flexedge.contract.wire import iso
from flexedge.tools.harness.scripted_market import MarketClient
from tests.support.site_process import RunningSite

SLOT = 12
PERIOD = 1.0
TOLERANCE = 0.02
PAYMENT = 0.5  # what each control event offers for its whole requested energy

# The site. The battery's D3A offers are sized by energy, not by power over the slot: with a
# supply ratio of 0.002 its discharge offer (~0.0085 kWh) is well below 5 kW x 12 s, so the
# whole offer can be traded and delivered in the rest of the slot.
BATTERY_KW = 5.0
CAPACITY_KWH = 10.0
SOC_FLOOR = 0.1 + 0.05  # soc_min + reserve_soc
DISCHARGE_EFFICIENCY = 0.95
SUPPLY_RATIO = 0.002
BATTERY_SUPPLY_RATE = 35.0
HEAT_PUMP_KW = 5.0  # its declared (flat) baseline demand
CURTAILABLE = 0.6
FIRM_KW = (1 - CURTAILABLE) * HEAT_PUMP_KW
GENSET_MIN_KW, GENSET_MAX_KW = 1.0, 10.0
RATIO = 1.5
PRICE_PER_KWH = 0.12
# What tariff-1's standing order (ratio 1.5) puts on offer per hour left, with nothing else
# committed: all curtailable load (ratio capped at 1) plus half of the battery's discharge.
LOAD_BOUND_KW = min(RATIO, 1.0) * CURTAILABLE * HEAT_PUMP_KW
BATTERY_BOUND_KW = (RATIO - 1.0) * BATTERY_KW
ORDER_BOUND_KW = LOAD_BOUND_KW + BATTERY_BOUND_KW

BATTERY: dict[str, Any] = {
    "name": "battery-1",
    "kind": "battery",
    "host": "127.0.0.1",
    "port": 1,
    "unit_id": 1,
    "capacity_kwh": CAPACITY_KWH,
    "soc_min": 0.1,
    "soc_max": 0.95,
    "reserve_soc": 0.05,
    "max_charge_kw": BATTERY_KW,
    "max_discharge_kw": BATTERY_KW,
    "charge_efficiency": 0.95,
    "discharge_efficiency": DISCHARGE_EFFICIENCY,
    "simulator": {"initial_soc": 0.6},
}
HEAT_PUMP: dict[str, Any] = {
    "name": "heat-pump",
    "kind": "flexible_load",
    "host": "127.0.0.1",
    "port": 1,
    "baseline_profile": [[0, HEAT_PUMP_KW]],
    "curtailable_share": CURTAILABLE,
    "max_kw": 8,
    "control": "limit",
}
GENSET: dict[str, Any] = {
    "name": "genset",
    "kind": "generator",
    "host": "127.0.0.1",
    "port": 1,
    "min_kw": GENSET_MIN_KW,
    "max_kw": GENSET_MAX_KW,
    "ramp_kw_per_s": 5,
}
REGISTRY = {
    "battery-1": {"demand_rate_ct_per_kwh": 33, "supply_rate_ct_per_kwh": BATTERY_SUPPLY_RATE},
    "heat-pump": {"demand_rate_ct_per_kwh": 30, "supply_rate_ct_per_kwh": 34},
    "genset": {"demand_rate_ct_per_kwh": 20, "supply_rate_ct_per_kwh": 40},
}
SITE: dict[str, Any] = {
    "slot_seconds": SLOT,
    "control_period_s": PERIOD,
    "delivery_tolerance": TOLERANCE,
    "balancing": {
        "enable_balancing_market": True,
        "balancing_offer_demand_ratio": 0.002,
        "balancing_offer_supply_ratio": SUPPLY_RATIO,
    },
    "asset_registry": REGISTRY,
    "tariffs": [
        {
            "id": "tariff-1",
            "assets": ["battery-1", "heat-pump"],
            "exercise_ratio": RATIO,
            "price_per_kwh": PRICE_PER_KWH,
        }
    ],
    "devices": [BATTERY, HEAT_PUMP, GENSET],
}


# -- the market side ------------------------------------------------------------------------
def is_offer(message: dict[str, Any], asset: str, slot: float, sign: int) -> bool:
    return (
        message.get("type") == "balancing_offer"
        and message["asset"] == asset
        and message["slot_start"] == iso(slot)
        and message["energy_kwh"] * sign > 0
    )


async def fresh_battery_offer(
    site: RunningSite, market: MarketClient
) -> tuple[float, dict[str, Any]]:
    """(slot start, the battery's supply offer) of a slot with most of its time left: the
    current slot's if it was published at the slot start and 9 s are left (read from the
    daemon's log), else the next slot's, waited for on the wire."""
    now = time.time()
    start = now - now % SLOT
    while start + SLOT - time.time() >= 9:
        rows = site.query(
            "SELECT id, asset, slot_start, slot_end, energy_kwh, rate_ct_per_kwh, price_ct "
            "FROM offers WHERE asset = 'battery-1' AND slot_start = ? AND energy_kwh > 0 "
            "AND created_ts < ?",
            start,
            start + 1.0,
        )
        if rows:
            oid, asset, slot, end, energy, rate, price = rows[0]
            return start, {
                "id": oid,
                "asset": asset,
                "slot_start": iso(slot),
                "slot_end": iso(end),
                "energy_kwh": energy,
                "rate_ct_per_kwh": rate,
                "price_ct": price,
            }
        if time.time() > start + 1.0:
            break  # published late, or not at all: not a fresh offer
        await asyncio.sleep(0.1)
    start += SLOT
    offer = await market.wait_for(lambda m: is_offer(m, "battery-1", start, +1), SLOT + 10)
    return start, offer


# -- the daemon's log ------------------------------------------------------------------------
COMMITMENT_COLUMNS = (
    "id",
    "ref",
    "ref_type",
    "offer_id",
    "window_start",
    "window_end",
    "requested_kwh",
    "accepted_kwh",
    "shares",
    "settlement",
    "delivered_kwh",
    "by_asset",
    "covered_s_by_asset",
    "state",
)


def commitment_row(site: RunningSite, cid: str) -> dict[str, Any]:
    rows = site.query(f"SELECT {', '.join(COMMITMENT_COLUMNS)} FROM commitments WHERE id = ?", cid)
    assert len(rows) == 1, f"{cid}: {rows}"
    row = dict(zip(COMMITMENT_COLUMNS, rows[0], strict=True))
    for key in ("shares", "by_asset", "covered_s_by_asset"):
        row[key] = json.loads(row[key])
    return row


def inbound_row(site: RunningSite, msg_id: str) -> tuple[Any, ...]:
    rows = site.query(
        "SELECT type, topic, status, reason, commitment_id FROM inbound WHERE msg_id = ?", msg_id
    )
    assert len(rows) == 1, f"{msg_id}: {rows}"
    return rows[0]


Setpoint = tuple[float, float | None, dict[str, float], str]


def setpoints(
    site: RunningSite, asset: str, since: float = 0.0, until_ts: float = float("inf")
) -> list[Setpoint]:
    rows = site.query(
        "SELECT ts, p_kw, allocations, cause FROM setpoints WHERE asset = ? "
        "AND ts >= ? AND ts <= ? ORDER BY ts",
        asset,
        since,
        min(until_ts, 1e12),
    )
    return [(ts, p, json.loads(alloc or "{}"), cause) for ts, p, alloc, cause in rows]


def check_every_setpoint_within_limits(site: RunningSite) -> None:
    """No setpoint the daemon ever wrote leaves its device's limits, and what a device is
    set to is its baseline plus what the commitments on it were allocated."""
    rows = site.query("SELECT asset, p_kw, allocations, cause FROM setpoints")
    assert rows
    for asset, p, raw, cause in rows:
        allocated = sum(json.loads(raw or "{}").values())
        if asset == "battery-1":
            assert p is not None and -BATTERY_KW - 1e-9 <= p <= BATTERY_KW + 1e-9, (p, cause)
            assert p == pytest.approx(allocated, abs=1e-6), (p, raw, cause)
        elif asset == "heat-pump":
            # A cap between its whole demand and its firm part, or released (None).
            if p is not None:
                assert -HEAT_PUMP_KW - 1e-9 <= p <= -FIRM_KW + 1e-9, (p, cause)
                assert p == pytest.approx(-HEAT_PUMP_KW + allocated, abs=1e-6), (p, raw)
        else:
            assert asset == "genset"
            assert p is not None and (p == 0.0 or GENSET_MIN_KW <= p <= GENSET_MAX_KW), p


def check_report(
    site: RunningSite,
    report: dict[str, Any],
    *,
    ack: dict[str, Any],
    requested: float,
    accepted: float,
    full_settlement: float,
    baselines: dict[str, float],
) -> dict[str, Any]:
    """Every field of a delivery report, against the commitment logged for it; returns the
    commitment row (after the report it is `reported`, with the metered progress)."""
    cid = ack["commitment_id"]
    row = commitment_row(site, cid)
    delivered = report["delivered_kwh"]
    assert report["type"] == "delivery_report" and report["id"] == f"dr-{cid}"
    assert report["commitment_id"] == cid and report["ref"] == ack["ref"]
    assert report["ref_type"] == ack["ref_type"]
    assert report["window_start"] == iso(row["window_start"])
    assert report["window_end"] == iso(row["window_end"])
    assert report["requested_kwh"] == pytest.approx(requested, abs=1e-9)
    assert report["accepted_kwh"] == pytest.approx(accepted, abs=1e-9)
    assert abs(delivered - accepted) <= TOLERANCE * abs(accepted), report
    assert report["status"] == "delivered", report
    # Pay-as-delivered, capped at what was bought (from the unrounded metered energy).
    assert row["settlement"] == pytest.approx(full_settlement, abs=1e-6)
    assert report["settlement"] == pytest.approx(
        row["settlement"] * min(1.0, row["delivered_kwh"] / row["accepted_kwh"]), abs=1e-6
    )
    # Coverage: the share-weighted part of the window backed by telemetry.
    duration = row["window_end"] - row["window_start"]
    covered = sum(
        share * row["covered_s_by_asset"].get(asset, 0.0) for asset, share in row["shares"]
    )
    assert report["coverage"] == pytest.approx(min(1.0, covered / duration), abs=1e-4)
    by_asset = {a["asset"]: a for a in report["assets"]}
    for asset, baseline in baselines.items():
        assert by_asset[asset]["baseline_kw"] == pytest.approx(baseline), report
        assert by_asset[asset]["delivered_kwh"] == pytest.approx(
            row["by_asset"].get(asset, 0.0), abs=1e-6
        )
    assert sum(a["delivered_kwh"] for a in report["assets"]) == pytest.approx(delivered, abs=1e-5)
    # The log: the commitment is closed with the metered energy, the report is kept as sent.
    assert row["state"] == "reported"
    assert row["delivered_kwh"] == pytest.approx(delivered, abs=1e-6)
    logged = site.query(
        "SELECT commitment_id, status, delivered_kwh, accepted_kwh, payload "
        "FROM reports WHERE id = ?",
        report["id"],
    )
    assert len(logged) == 1
    assert logged[0][:4] == (cid, report["status"], delivered, report["accepted_kwh"])
    assert json.loads(logged[0][4]) == {k: v for k, v in report.items() if k != "_topic"}
    return row


def check_ack(
    ack: dict[str, Any], *, ref: str, ref_type: str, status: str, accepted: float | None
) -> None:
    assert ack["type"] == "ack" and ack["ref"] == ref and ack["ref_type"] == ref_type
    assert ack["status"] == status, ack
    if accepted is None:
        assert ack["commitment_id"] is None and "accepted_kwh" not in ack, ack
    else:
        assert ack["commitment_id"] == f"cm-{ref}", ack
        assert ack["accepted_kwh"] == pytest.approx(accepted, abs=1e-6), ack
