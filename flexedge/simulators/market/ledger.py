"""What the market simulator sent, what the site answered, and the bill at the end.

Every message sent is recorded with what it asked for; the site's ack (`market/ack`, by
`ref`) and delivery report (`market/delivery`, by `commitment_id`) are attached as they come.
Settlement is pay-as-offer for what was delivered, capped at what was accepted:
paid = price of the accepted energy x min(delivered, accepted) / accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Every inbound message gets exactly one ack (wire contract v1), so a missing one is a problem
# whatever its type.
ACK_REQUIRED = frozenset({"spot_trade", "balancing_trade", "balancing_control", "economic_control"})
COMMITTED = frozenset({"accepted", "clipped"})
# D3A rates are ct/kWh; Power TAC accounts in euro.
UNITS = {"d3a": "ct", "powertac": "€"}


@dataclass
class Sent:
    id: str
    type: str
    market: str  # "d3a" or "powertac"
    step: int
    target: str  # asset, offer id or tariff id
    requested_kwh: float | None
    price: float  # for the requested energy: price_ct (D3A) or payment (Power TAC)
    window_end: float
    ack: Mapping[str, Any] | None = None
    report: Mapping[str, Any] | None = None

    @property
    def commitment_id(self) -> str | None:
        if self.ack is None or self.ack.get("status") not in COMMITTED:
            return None
        cid = self.ack.get("commitment_id")
        return str(cid) if cid else None

    @property
    def accepted_kwh(self) -> float | None:
        for source in (self.report, self.ack):
            if source is not None and source.get("accepted_kwh") is not None:
                return float(source["accepted_kwh"])
        # Refused: nothing accepted. Taken without a commitment (a spot trade): no energy
        # the site promised to deliver, so nothing to show.
        rejected = self.ack is not None and self.ack.get("status") == "rejected"
        return 0.0 if rejected else None

    @property
    def delivered_kwh(self) -> float | None:
        return None if self.report is None else float(self.report["delivered_kwh"])

    @property
    def problem(self) -> str | None:
        """Why this message makes the run fail: a missing ack or delivery report."""
        if self.ack is None:
            return "no ack" if self.type in ACK_REQUIRED else None
        if self.commitment_id and self.report is None:
            return "no delivery report"
        return None


def paid(price: float, requested: float, accepted: float, delivered: float) -> float:
    """Pay-as-offer for the delivered part of the accepted energy (never above it)."""
    if not requested or not accepted:
        return 0.0
    price_accepted = price * abs(accepted) / abs(requested)
    share = min(1.0, max(0.0, delivered / accepted))
    return round(price_accepted * share, 6)


class Ledger:
    def __init__(self) -> None:
        self.sent: dict[str, Sent] = {}
        self.by_commitment: dict[str, Sent] = {}
        self._changed = asyncio.Event()

    def record(self, sent: Sent) -> None:
        self.sent[sent.id] = sent

    def on_ack(self, body: Mapping[str, Any]) -> None:
        sent = self.sent.get(str(body.get("ref")))
        if sent is None or sent.ack is not None:
            return  # another market's message, or a QoS 1 repeat
        sent.ack = body
        if sent.commitment_id:
            self.by_commitment[sent.commitment_id] = sent
        self._changed.set()

    def on_report(self, body: Mapping[str, Any]) -> None:
        # By commitment, or by ref should the report overtake its ack; reports of other
        # markets' commitments on the same site are not ours to settle.
        sent = self.by_commitment.get(str(body.get("commitment_id"))) or self.sent.get(
            str(body.get("ref"))
        )
        if sent is not None and sent.report is None:
            sent.report = body
            self._changed.set()

    async def wait_ack(self, ref: str, timeout: float) -> Mapping[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (ack := self.sent[ref].ack) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return ack

    def complete(self) -> bool:
        return all(s.problem is None for s in self.sent.values())

    async def wait_complete(self, deadline: float) -> bool:
        """Until every ack and report is in, or the wall clock reaches `deadline`."""
        while not self.complete():
            left = deadline - time.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True

    def last_window_end(self) -> float:
        return max((s.window_end for s in self.sent.values()), default=time.time())


def _kwh(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def settlement_table(ledger: Ledger) -> str:
    lines = [
        f"{'commitment':<26} {'market':<8} {'target':<28} {'accepted':>9} "
        f"{'delivered':>9} {'price':>10} {'paid':>10}"
    ]
    totals: dict[str, float] = {}
    for s in ledger.sent.values():
        if not s.commitment_id or s.requested_kwh is None:
            continue
        accepted = s.accepted_kwh or 0.0
        delivered = s.delivered_kwh
        amount = paid(s.price, s.requested_kwh, accepted, delivered or 0.0)
        totals[s.market] = totals.get(s.market, 0.0) + amount
        unit = UNITS.get(s.market, "")
        price_accepted = s.price * abs(accepted) / abs(s.requested_kwh)
        lines.append(
            f"{s.commitment_id[:26]:<26} {s.market:<8} {s.target[:28]:<28} "
            f"{_kwh(accepted):>9} {_kwh(delivered):>9} "
            f"{price_accepted:>7.4f} {unit:<2} {amount:>7.4f} {unit}"
        )
    for market, amount in sorted(totals.items()):
        lines.append(
            f"{'total ' + market:<26} {'':<8} {'':<28} {'':>9} {'':>9} {'':>10} "
            f"{amount:>7.4f} {UNITS.get(market, '')}"
        )
    return "\n".join(lines)


def scorecard_table(ledger: Ledger) -> str:
    lines = [
        f"{'message':<22} {'type':<17} {'target':<28} {'requested':>9} {'ack':<9} "
        f"{'accepted':>9} {'delivered':>9}  status"
    ]
    sums = {"requested": 0.0, "accepted": 0.0, "delivered": 0.0}
    for s in ledger.sent.values():
        ack = str(s.ack.get("status")) if s.ack else "—"
        status = str(s.report.get("status")) if s.report else (s.problem or "")
        lines.append(
            f"{s.id[:22]:<22} {s.type:<17} {s.target[:28]:<28} "
            f"{_kwh(s.requested_kwh):>9} {ack:<9} {_kwh(s.accepted_kwh):>9} "
            f"{_kwh(s.delivered_kwh):>9}  {status}"
        )
        if s.type in ACK_REQUIRED:
            sums["requested"] += abs(s.requested_kwh or 0.0)
            sums["accepted"] += abs(s.accepted_kwh or 0.0)
            sums["delivered"] += abs(s.delivered_kwh or 0.0)
    reports = [s for s in ledger.sent.values() if s.report]
    on_target = sum(1 for s in reports if s.report and s.report.get("status") == "delivered")
    lines.append(
        f"{'total |kWh| balancing':<22} {'':<17} {'':<28} "
        f"{sums['requested']:>9.4f} {'':<9} {sums['accepted']:>9.4f} "
        f"{sums['delivered']:>9.4f}  {on_target}/{len(reports)} delivered"
    )
    for s in ledger.sent.values():
        if s.ack is not None and s.ack.get("reason"):
            lines.append(f"  {s.id}: {s.ack.get('status')}: {s.ack['reason']}")
    missing = [s for s in ledger.sent.values() if s.problem]
    if missing:
        lines.append(f"MISSING: {', '.join(f'{s.id} ({s.problem})' for s in missing)}")
    return "\n".join(lines)
