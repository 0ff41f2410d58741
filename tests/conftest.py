"""Shared fixtures for the flexedge test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flexedge.errors import BrokerUnavailable
from flexedge.tools.harness.broker import PrivateBroker


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
