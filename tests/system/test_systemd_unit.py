"""The shipped systemd unit passes `systemd-analyze verify` and scores at most 3.0 on
`systemd-analyze security --offline=yes`. Both run on a copy whose ExecStart is this
environment's own `flexedge`, because verify checks that the program exists."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from flexedge.config.loader import EXAMPLE_SITE
from tests.support.systemd_analyze import MAX_EXPOSURE, assert_verifies, exposure

UNIT = EXAMPLE_SITE.parent.parent / "systemd" / "flexedge.service"
INSTALLED = "/opt/flexedge/.venv/bin/flexedge"


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
    assert_verifies(_unit_here(tmp_path))


@pytest.mark.timeout(60)
def test_unit_is_notify_with_a_watchdog_and_scores_at_most_3(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert exposure(_unit_here(tmp_path)) <= MAX_EXPOSURE
