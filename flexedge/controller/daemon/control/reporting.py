"""Closing in the shell: a commitment whose window is over becomes its delivery report, and
each asset's metered slot its `measurement`, once the core says they close; both are logged
and queued for the market in the tick's transaction.

Closing is two steps: close_finished and close_slots write, and only once the transaction
has committed does forget() drop what they closed from memory. A log that cannot be written
then loses nothing: the next tick closes the same commitments and slots again."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from flexedge.config.loader import Site
from flexedge.contract.wire import delivery_report, measurement
from flexedge.controller.core.closing import commitment_closes, slot_closes
from flexedge.controller.core.reports import build_report, reported_assets, served_first_over
from flexedge.controller.daemon.assets import Asset
from flexedge.controller.daemon.control.commitments import OpenCommitments
from flexedge.controller.daemon.control.metering import Meter
from flexedge.controller.daemon.outbox import Outbox
from flexedge.controller.daemon.store import Store

log = logging.getLogger(__name__)


@dataclass
class Closed:
    """What one tick's transaction closed, to forget once it has committed."""

    commitments: list[tuple[str, str]] = field(default_factory=list)  # id, report line
    slots: list[tuple[str, float]] = field(default_factory=list)  # asset, slot start
    reports: list[tuple[str, float]] = field(default_factory=list)  # status, delivered kWh


class Reporter:
    def __init__(
        self,
        site: Site,
        assets: Mapping[str, Asset],
        commitments: OpenCommitments,
        meter: Meter,
        store: Store,
        outbox: Outbox,
    ) -> None:
        self.config = site.config
        self.period_s = site.config.control_period_s
        self.slot_s = float(site.config.slot_seconds)
        self.assets = assets
        self.commitments = commitments
        self.meter = meter
        self.store = store
        self.outbox = outbox
        # Since start, by report status: commitments closed and the energy they delivered
        # (the metrics' counters; counted once the report is in the log).
        self.closed_count: dict[str, int] = {}
        self.delivered_kwh: dict[str, float] = {}

    def close_finished(self, now: float, closed: Closed, ended_early: str = "") -> None:
        """Report every commitment whose window is over and metered past its end; with
        `ended_early`, every open commitment, now, with that reason."""
        last_metered = self.meter.last_metered_ts()
        open_now = tuple(self.commitments.by_id.values())  # before this tick closes any
        for cid, commitment in self.commitments.by_id.items():
            if not ended_early and not commitment_closes(
                commitment, last_metered, self.period_s, now
            ):
                continue
            used = self.meter.baselines_of(cid)
            progress = self.commitments.progress[cid]
            baselines = {
                a: used.get(a, self.assets[a].baseline_kw(commitment.window_start))
                for a in reported_assets(commitment.assets, commitment.backups, progress.by_asset)
            }
            report = build_report(
                commitment, progress, baselines, self.config.delivery_tolerance, ended_early
            )
            payload = delivery_report(report)
            self.store.close_commitment(cid, payload, now)
            self.outbox.put("market/delivery", payload)
            self.store.save_progress({cid: progress})
            line = f"{report.status}: {report.delivered_kwh:.4f} of {report.accepted_kwh:.4f} kWh"
            if first := served_first_over(commitment, report.status, open_now):
                line += (
                    f"; economic control {', '.join(first)} of its timeslot took precedence "
                    "on its loads (served first)"
                )
            closed.commitments.append((cid, line))
            closed.reports.append((report.status, report.delivered_kwh))

    def close_slots(self, now: float, closed: Closed) -> None:
        """One `measurement` per asset and slot once the slot is metered past its end."""
        last_metered = self.meter.last_metered_ts()
        for name, slots in self.meter.open_slots().items():
            for slot in slots:
                if not slot_closes(slot, self.slot_s, last_metered[name], self.period_s, now):
                    continue
                kwh, covered = self.meter.slot_energy(name, slot)
                payload = measurement(
                    self.config.site, name, slot, kwh, min(1.0, covered / self.slot_s)
                )
                self.store.log_measurement(payload, now)
                self.outbox.put("market/measurement", payload)
                closed.slots.append((name, slot))

    def forget(self, closed: Closed) -> None:
        """What `closed` holds is in the log now: drop it from memory."""
        for cid, line in closed.commitments:
            self.commitments.remove(cid)
            self.meter.forget_baselines(cid)
            log.info("commitment %s %s", cid, line)
        for name, slot in closed.slots:
            self.meter.forget_slot(name, slot)
        for status, kwh in closed.reports:
            self.closed_count[status] = self.closed_count.get(status, 0) + 1
            # A delivery the wrong way counts as none here (its report tells the sign), so
            # the total only grows, as a Prometheus counter must.
            self.delivered_kwh[status] = self.delivered_kwh.get(status, 0.0) + max(0.0, kwh)
