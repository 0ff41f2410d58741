"""Test support: shared harnesses. Only tests import it."""
