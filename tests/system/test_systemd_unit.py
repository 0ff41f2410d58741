"""The shipped systemd unit passes `systemd-analyze verify` and scores at most 3.0 on
`systemd-analyze security --offline=yes`. Both run on a copy whose ExecStart is this
environment's own `flexedge`, because verify checks that the program exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flexedge.config.loader import EXAMPLE_SITE

UNIT = EXAMPLE_SITE.parent.parent / "systemd" / "flexedge.service"
INSTALLED = "/opt/flexedge/.venv/bin/flexedge"
MAX_EXPOSURE = 3.0


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing, and CI needs it (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def _unit_here(tmp_path: Path) -> Path:
    program = Path(sys.executable).parent / "flexedge"
    assert program.exists(), f"no flexedge entry point beside {sys.executable}"
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED} " in text
    unit = tmp_path / "flexedge.service"
    unit.write_text(text.replace(INSTALLED, str(program)), encoding="utf-8")
    return unit


@pytest.mark.timeout(60)
def test_unit_passes_verify(tmp_path: Path) -> None:
    result = subprocess.run(
        [_analyze(), "verify", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "flexedge.service" not in result.stderr, result.stderr


@pytest.mark.timeout(60)
def test_unit_is_notify_with_a_watchdog_and_scores_at_most_3(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    result = subprocess.run(
        [_analyze(), "security", "--offline=yes", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
        timeout=50,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout
