"""How many examples a hypothesis property runs.

The full counts are what the properties were written with and what CI runs. For an edit-test
loop, `FLEXEDGE_QUICK=1` runs a tenth of each (at least 20), so the unit tier takes seconds;
it is a convenience, never a replacement for the full run.
"""

from __future__ import annotations

import os

QUICK = os.environ.get("FLEXEDGE_QUICK") == "1"


def examples(full: int) -> int:
    """`full` normally; a tenth of it, at least 20, with FLEXEDGE_QUICK=1."""
    return max(20, full // 10) if QUICK else full
