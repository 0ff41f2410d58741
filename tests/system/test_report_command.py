"""`flexedge report` as an operator runs it: a child process on the known log of
tests/support/report_log.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.report_log import build_log


def test_the_flexedge_command_runs_report(tmp_path: Path) -> None:
    log = tmp_path / "site.sqlite"
    build_log(log).close()
    result = subprocess.run(
        [sys.executable, "-m", "flexedge.cli.main", "report", "--db", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "c2" in result.stdout and "partial" in result.stdout
