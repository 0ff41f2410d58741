"""Metering in the shell: each reading against its asset's baseline, attributed to the open
commitments (by the core) and summed per asset and slot until the slot is reported."""

from __future__ import annotations

from collections.abc import Mapping

from flexedge.controller.core.health import stale_after_s
from flexedge.controller.core.metering import Sample, attribute, per_slot
from flexedge.controller.daemon.assets import Asset, LoadAsset
from flexedge.controller.daemon.control.commitments import OpenCommitments
from flexedge.drivers.base import Reading


class Meter:
    def __init__(
        self,
        assets: Mapping[str, Asset],
        commitments: OpenCommitments,
        period_s: float,
        slot_s: float,
        holds: Mapping[str, float | None],
    ) -> None:
        self.assets = assets
        self.holds = holds  # held devices deliver for no commitment
        self.commitments = commitments
        self.period_s = period_s
        self.slot_s = slot_s
        self._last_sample: dict[str, Sample] = {}
        # Metered energy against the baseline per asset and slot, until it is reported.
        self._slot_energy: dict[str, dict[float, tuple[float, float]]] = {}
        self._report_baselines: dict[str, dict[str, float]] = {}

    def observe(
        self, reading: Reading, capped: bool, allocations: Mapping[str, dict[str, float]]
    ) -> None:
        """Meter one reading. `capped`: a cap we wrote holds the device (until its release
        is written); `allocations`: the allocations in force, per device and commitment."""
        name = reading.asset
        asset = self.assets[name]
        if isinstance(asset, LoadAsset) and asset.measured is not None:
            # Held by a cap we wrote (until the release is written), or due to be: either
            # way this reading is not what it would draw on its own.
            dispatched = capped or any(
                name in c.assets and c.active_at(reading.ts)
                for c in self.commitments.by_id.values()
            )
            asset.measured.observe(reading.ts, reading.p_kw, dispatched)
        baseline = asset.baseline_kw(reading.ts)
        sample = Sample(reading.ts, reading.p_kw - baseline)
        prev = self._last_sample.get(name)
        self._last_sample[name] = sample
        if prev is None:
            return
        max_gap_s = stale_after_s(self.period_s)
        slots = self._slot_energy.setdefault(name, {})
        for slot, (kwh, covered) in per_slot(prev, sample, self.slot_s, max_gap_s).items():
            so_far = slots.get(slot, (0.0, 0.0))
            slots[slot] = (so_far[0] + kwh, so_far[1] + covered)
        on_device = allocations.get(name, {})
        # A backup counts for a commitment only while dispatch has it covering for it: its
        # own wanderings at other times are none of that commitment's business.
        windows = {
            cid: (c.window_start, c.window_end)
            for cid, c in self.commitments.by_id.items()
            if name not in self.holds
            and (name in c.assets or (name in c.backups and cid in on_device))
        }
        if not windows:
            return
        result = attribute(prev, sample, windows, on_device, max_gap_s=max_gap_s)
        for cid, kwh in result.energy_kwh.items():
            self.commitments.progress[cid].add(name, kwh, result.covered_s.get(cid, 0.0))
            # The baseline this commitment is measured against, for its report.
            self._report_baselines.setdefault(cid, {}).setdefault(name, baseline)

    # -- what reporting takes -------------------------------------------------------------
    def last_metered_ts(self) -> dict[str, float]:
        """When each asset was last metered (assets never metered are missing)."""
        return {name: sample.ts for name, sample in self._last_sample.items()}

    def open_slots(self) -> dict[str, list[float]]:
        """The slots metered and not yet taken, per asset."""
        return {name: list(slots) for name, slots in self._slot_energy.items()}

    def slot_energy(self, name: str, slot_start: float) -> tuple[float, float]:
        """A slot's metered energy (kWh) and covered seconds."""
        return self._slot_energy[name][slot_start]

    def forget_slot(self, name: str, slot_start: float) -> None:
        """The slot is reported: nothing more is metered into it."""
        self._slot_energy[name].pop(slot_start, None)

    def baselines_of(self, commitment_id: str) -> dict[str, float]:
        """The baseline each asset of a commitment was measured against (first used)."""
        return self._report_baselines.get(commitment_id, {})

    def forget_baselines(self, commitment_id: str) -> None:
        self._report_baselines.pop(commitment_id, None)
