"""The fabricated sweeps of tests/report/sweeps.py, as fixtures for every test here."""

from tests.report.sweeps import kfold_sweep, sweep  # noqa: F401 - registered as fixtures
