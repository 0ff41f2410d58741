"""Shared fixtures for the flexedge test suite, and the tiers: each test is marked by its
folder (unit, component, system), so `-m unit` and `pytest tests/unit` select the same tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from flexedge.errors import BrokerUnavailable
from flexedge.tools.harness.broker import PrivateBroker
from tests.support.properties import QUICK

if QUICK:
    # Properties without their own count run 20 examples too (see tests/support/properties.py).
    settings.register_profile("quick", max_examples=20)
    settings.load_profile("quick")

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "component", "system")
# pyproject.toml's `timeout` (120 s) bounds the component and system tests; a unit test runs
# in well under a second, so one that takes this long is hanging.
UNIT_TIMEOUT_S = 30


def tier_of(path: Path) -> str | None:
    """The tier a test file belongs to: the first folder under tests/."""
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in TIERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            continue
        item.add_marker(tier)
        # A test's own timeout marker, where it has one, wins over the tier's.
        if tier == "unit" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateBroker]:
    """One private Mosquitto on a free port for the whole session.

    A missing mosquitto fails the tests instead of skipping them: CI installs it, so a skip
    would only hide a broken setup.
    """
    try:
        private = PrivateBroker()
        private.start()
    except BrokerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield private
    finally:
        private.close()
