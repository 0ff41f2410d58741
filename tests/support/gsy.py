"""gsy-e for the tests that run against it: skipped where it is not installed, but in CI (the
CI environment variable set), where it must be, a failure."""

from __future__ import annotations

import importlib.util
import os

import pytest

INSTALL = (
    "install gsy-e into the virtualenv: ./flexedge.sh test does it when "
    "../shared/thirdparty/gsy (or $FLEXEDGE_GSY_DIR) holds its wheels; see the README"
)

# One of gsy-e's dependencies imports through Python's old module-finder API.
IMPORT_WARNINGS = [
    pytest.mark.filterwarnings(f"ignore:{text}:DeprecationWarning")
    for text in ("find_module", "FileFinder.find_loader", "the load_module")
]


def require_gsy() -> None:
    """Skip the calling test without gsy-e, or fail it in CI."""
    if importlib.util.find_spec("gsy_e") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"gsy-e is not installed, and CI needs it: {INSTALL}", pytrace=False)
    pytest.skip(f"gsy-e is not installed ({INSTALL})")
