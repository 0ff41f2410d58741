"""A small hand-built SQLite log whose scores are known, written through
flexedge.controller.daemon.store.Store as the daemon would (used by tests/unit/test_report.py
and tests/system/test_report_command.py):
- c1 (trade, delivered): b1 (a battery) asked for a flat 2 kW for 20 s and gave exactly that;
- c2 (control, partial): g1 (a generator, baseline 2 kW) asked for 1, 3, 1, 3 kW above
  baseline, 5 s each, and followed two seconds late (telemetry every 0.5 s);
- c3 (trade, open): b1 asked for 1 kW for 10 s; telemetry stops after 4 s;
- c4 (trade, failed): l1 (a load) has no telemetry or setpoints at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flexedge.controller.core.model import Commitment, Progress, RefType
from flexedge.controller.daemon.store import Store
from tests.support.core_fixtures import T0

G1_BASELINE = 2.0


def _c2_kw(ts: float) -> float:
    """c2's request on g1 at ts: 1, 3, 1, 3 kW above baseline in 5-s steps, else 0."""
    if not T0 + 30 <= ts < T0 + 50:
        return 0.0
    return 1.0 if int((ts - T0 - 30) // 5) % 2 == 0 else 3.0


def _b1_allocations(ts: float) -> dict[str, float]:
    if T0 <= ts < T0 + 20:
        return {"c1": 2.0}
    if T0 + 60 <= ts < T0 + 70:
        return {"c3": 1.0}
    return {}


def _b1_kw(ts: float) -> float:
    # What b1 measures: c1's 2 kW through the end of its window, c3's 1 kW.
    if T0 <= ts <= T0 + 20:
        return 2.0
    return 1.0 if ts >= T0 + 60 else 0.0


def _commitment(
    cid: str,
    kind: RefType,
    start: float,
    end: float,
    requested: float,
    accepted: float,
    asset: str,
    settlement: float,
) -> Commitment:
    return Commitment(
        cid,
        f"ref-{cid}",
        kind,
        T0 + start,
        T0 + end,
        requested,
        accepted,
        ((asset, 1.0),),
        settlement,
    )


def _report(
    c: Commitment, status: str, delivered: float, coverage: float, baseline_kw: float
) -> dict[str, Any]:
    return {
        "id": f"dr-{c.id}",
        "commitment_id": c.id,
        "ref": c.ref,
        "ref_type": c.ref_type.value,
        "requested_kwh": c.requested_kwh,
        "accepted_kwh": c.accepted_kwh,
        "delivered_kwh": delivered,
        "status": status,
        "coverage": coverage,
        "settlement": c.settlement,
        "assets": [{"asset": c.assets[0], "baseline_kw": baseline_kw, "delivered_kwh": delivered}],
    }


def build_log(path: Path) -> Store:
    store = Store(path)
    trade, control = RefType.BALANCING_TRADE, RefType.BALANCING_CONTROL
    c1 = _commitment("c1", trade, 0, 20, 0.0111, 0.0111, "b1", 0.4)
    c2 = _commitment("c2", control, 30, 50, 0.0111, 0.0111, "g1", 0.0012)
    c3 = _commitment("c3", trade, 60, 70, 0.003, 0.0028, "b1", 0.1)
    c4 = _commitment("c4", trade, 80, 90, 0.005, 0.005, "l1", 0.2)
    with store.transaction():
        for c in (c1, c2, c3, c4):
            store.save_commitment(c, None, c.window_start)
        ticks = [T0 + k for k in range(-2, 73)]
        store.log_setpoints(
            [
                {
                    "ts": ts,
                    "asset": "b1",
                    "p_kw": sum(_b1_allocations(ts).values()),
                    "allocations": json.dumps(_b1_allocations(ts)),
                    "cause": "tick",
                }
                for ts in ticks
            ]
            + [
                {
                    "ts": ts,
                    "asset": "g1",
                    "p_kw": G1_BASELINE + _c2_kw(ts),
                    "allocations": json.dumps({"c2": _c2_kw(ts)} if _c2_kw(ts) else {}),
                    "cause": "tick",
                }
                for ts in ticks
            ]
        )
        store.log_telemetry(
            [
                {
                    "ts": ts,
                    "asset": "b1",
                    "p_kw": _b1_kw(ts),
                    "soc": 0.5,
                    "available": 1,
                    "setpoint_kw": None,
                }
                for ts in ticks
                if ts <= T0 + 64
            ]
            + [
                {
                    "ts": T0 + k / 2,
                    "asset": "g1",
                    "p_kw": G1_BASELINE + _c2_kw(T0 + k / 2 - 2),
                    "soc": None,
                    "available": 1,
                    "setpoint_kw": None,
                }
                for k in range(-4, 145)
            ]
        )
        store.save_progress({"c3": Progress(0.0011, {"b1": 0.0011}, {"b1": 4.0})})
        store.close_commitment("c1", _report(c1, "delivered", 0.0111, 1.0, 0.0), T0 + 21)
        store.close_commitment("c2", _report(c2, "partial", 0.0094, 1.0, G1_BASELINE), T0 + 51)
        store.close_commitment("c4", _report(c4, "failed", 0.0, 0.0, -3.0), T0 + 91)
    return store
