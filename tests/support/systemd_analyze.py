"""`systemd-analyze verify` and `security --offline=yes` on a unit file, for the unit's tests
(tests/system/test_systemd_unit.py on the shipped file, test_install.py on the installed one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# The bar for `systemd-analyze security --offline=yes`.
MAX_EXPOSURE = 3.0


def systemd_analyze() -> str:
    """The program, or a skip (a failure under CI, which installs it: see .ci/run)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing, and CI needs it (apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def assert_verifies(unit: Path) -> None:
    """verify exits 0 and says nothing about the unit (it warns on stderr and still exits 0)."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert unit.name not in result.stderr, result.stderr


def exposure(unit: Path) -> float:
    """The overall exposure level `security --offline=yes` gives the unit."""
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))
