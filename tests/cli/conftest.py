"""The fabricated sweep of tests/report/sweeps.py, for `volseg report` as typed."""

from tests.report.sweeps import sweep  # noqa: F401 - registered as a fixture
