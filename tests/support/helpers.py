"""The old name of the tests' harness, kept so imports written against it still work: new
tests import tests.support.harness."""

from tests.support.harness import FakeClock, run

__all__ = ["FakeClock", "run"]
