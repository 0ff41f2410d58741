"""`flexedge report`: a scorecard of every commitment in a SQLite log, and an optional plot.

The shell around controller/core/scoring.py: it reads the log read-only (a running daemon may
keep writing to it), turns rows into plain data, and renders. Baselines come from the delivery
reports (each asset's baseline at its window's start), since the log has no site file.

Modules: log_reader.py (opening and reading the log), card.py (the scorecard's lines),
render.py (text and JSON), plot.py (the optional plot).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flexedge.controller.core.scoring import DELAY_MAX_S
from flexedge.tools.scorecard.card import Line, Scorecard, build_scorecard
from flexedge.tools.scorecard.log_reader import ReportError, open_log
from flexedge.tools.scorecard.plot import plot_log, require_matplotlib
from flexedge.tools.scorecard.render import as_json, render_text

__all__ = [
    "Line",
    "ReportError",
    "Scorecard",
    "as_json",
    "build_scorecard",
    "open_log",
    "render_text",
    "run_report",
]


def run_report(
    db: Path, plot: Path | None = None, json_out: bool = False, delay_max_s: float = DELAY_MAX_S
) -> int:
    if plot is not None:
        require_matplotlib()
    with open_log(db) as conn:
        card = build_scorecard(conn, db, delay_max_s)
        print(json.dumps(as_json(card), indent=2) if json_out else render_text(card))
        if plot is not None:
            plot_log(conn, card, plot)
            print(f"plot: {plot}", file=sys.stderr)  # stderr: --json keeps stdout pure JSON
    return 0
