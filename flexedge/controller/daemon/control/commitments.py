"""The commitments being delivered and their metered progress: the state metering,
dispatch and reporting share."""

from __future__ import annotations

from flexedge.controller.core.admission import Ledger
from flexedge.controller.core.model import Commitment, Progress


class OpenCommitments:
    def __init__(self) -> None:
        self.by_id: dict[str, Commitment] = {}
        self.progress: dict[str, Progress] = {}

    def add(self, commitment: Commitment, progress: Progress | None = None) -> None:
        self.by_id[commitment.id] = commitment
        self.progress[commitment.id] = progress or Progress()

    def remove(self, commitment_id: str) -> Progress:
        """Forget a closed commitment; returns its final progress."""
        del self.by_id[commitment_id]
        return self.progress.pop(commitment_id)

    def ledger(self) -> Ledger:
        return Ledger(list(self.by_id.values()), self.progress)
