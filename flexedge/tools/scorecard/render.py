"""The scorecard as text (the terminal) and as JSON (`flexedge report --json`)."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from flexedge.controller.core.scoring import TOLERANCE
from flexedge.tools.scorecard.card import Scorecard

# Settlement is in the market's own unit (model.Commitment): never add the two kinds up.
SETTLEMENT_UNIT = {"balancing_trade": "ct", "balancing_control": "(event payments)"}


def iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):  # a year 10000 window in an old log
        return f"{ts:g} (out of range)"


def totals(card: Scorecard) -> dict[str, Any]:
    settled: dict[str, float] = {}
    for line in card.lines:
        if line.settlement is not None:
            settled[line.ref_type] = settled.get(line.ref_type, 0.0) + line.settlement
    scores = [line.score.total for line in card.lines if line.score.total is not None]
    return {
        "commitments": len(card.lines),
        "by_status": dict(Counter(line.status for line in card.lines)),
        "requested_kwh": round(sum(line.requested_kwh for line in card.lines), 6),
        "accepted_kwh": round(sum(line.accepted_kwh for line in card.lines), 6),
        "delivered_kwh": round(sum(line.delivered_kwh for line in card.lines), 6),
        "settlement_by_type": {t: round(v, 6) for t, v in sorted(settled.items())},
        "mean_score": round(statistics.fmean(scores), 4) if scores else None,
        "scored": len(scores),
    }


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def as_json(card: Scorecard) -> dict[str, Any]:
    return {
        "db": card.db,
        "control_period_s": round(card.control_period_s, 3),
        "max_gap_s": round(card.max_gap_s, 3),
        "delay_max_s": card.delay_max_s,
        "tolerance": TOLERANCE,
        "commitments": [
            {
                "id": line.id,
                "ref": line.ref,
                "ref_type": line.ref_type,
                "window_start": iso(line.window_start),
                "window_end": iso(line.window_end),
                "requested_kwh": line.requested_kwh,
                "accepted_kwh": line.accepted_kwh,
                "delivered_kwh": line.delivered_kwh,
                "status": line.status,
                "coverage": _r(line.coverage),
                "settlement": line.settlement,
                "baselines_kw": line.baselines_kw,
                "baseline_assumed": list(line.baseline_assumed),
                "samples": line.score.samples,
                "scored_samples": line.score.scored,
                "tracking": _r(line.score.tracking),
                "performance": {
                    "score": _r(line.score.total),
                    "correlation": _r(line.score.correlation),
                    "delay": _r(line.score.delay),
                    "delay_s": line.score.delay_s,
                    "precision": _r(line.score.precision),
                },
            }
            for line in card.lines
        ],
        "totals": totals(card),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_text(card: Scorecard) -> str:
    width = max([len("commitment"), *(len(line.id) for line in card.lines)])
    out = [
        f"flexedge report: {card.db}",
        f"control period {card.control_period_s:.3g} s; telemetry gaps over "
        f"{card.max_gap_s:.3g} s are not scored",
        "",
    ]
    out.append(
        f"{'commitment':<{width}}  {'type':<17}  {'window start (UTC)':<23} "
        f"{'length':>7} {'requested':>10} {'accepted':>9} {'delivered':>9}  "
        f"{'status':<9} {'cover':>6} {'track':>6}  {'score':>5} {'corr':>5} "
        f"{'delay':>5} {'prec':>5}"
    )
    for line in card.lines:
        s = line.score
        start = iso(line.window_start).replace("T", " ")[:23]
        out.append(
            f"{line.id:<{width}}  {line.ref_type:<17}  {start:<23} "
            f"{line.window_end - line.window_start:>6.1f}s {line.requested_kwh:>+10.4f} "
            f"{line.accepted_kwh:>+9.4f} {line.delivered_kwh:>+9.4f}  {line.status:<9} "
            f"{_pct(line.coverage):>6} {_pct(s.tracking):>6}  {_num(s.total):>5} "
            f"{_num(s.correlation):>5} {_num(s.delay):>5} {_num(s.precision):>5}"
        )
        if line.baseline_assumed:
            out.append(
                f"{'':<{width}}  (no delivery report gives a baseline for "
                f"{', '.join(line.baseline_assumed)}: 0 kW taken)"
            )
    t = totals(card)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(t["by_status"].items()))
    settled = (
        "; ".join(
            f"{kind} {v:g} {SETTLEMENT_UNIT.get(kind, '')}".rstrip()
            for kind, v in t["settlement_by_type"].items()
        )
        or "none yet"
    )
    mean = "n/a" if t["mean_score"] is None else f"{t['mean_score']:.3f}"
    out += [
        "",
        f"totals: {t['commitments']} commitments ({by_status or 'none'})",
        f"  energy: requested {t['requested_kwh']:+.4f} kWh, accepted "
        f"{t['accepted_kwh']:+.4f} kWh, delivered {t['delivered_kwh']:+.4f} kWh",
        f"  settlement: {settled}",
        f"  mean performance score: {mean} over {t['scored']} scored",
        "",
        f"track  share of 1-s samples within {TOLERANCE:.0%} of the target (never tighter "
        f"than {TOLERANCE:.0%} of the mean |target|)",
        "score  PJM-style: the mean of corr, delay and prec (of those that apply)",
        f"corr   best correlation of target and response over delays 0-"
        f"{card.delay_max_s:g} s; n/a for a flat target",
        f"delay  ({card.delay_max_s:g} s - that best delay) / {card.delay_max_s:g} s",
        "prec   1 - mean |response - target| / mean |target|",
    ]
    return "\n".join(out)
