"""`map_cases`: every case done, in input order, in worker processes or here."""

import logging
import multiprocessing
import os

import pytest

from volseg.data.adapters.base import Case
from volseg.data.case_pool import map_cases


def _case_id_but_die_in_a_worker(case):
    if multiprocessing.parent_process() is not None:
        os._exit(1)  # as a worker killed for memory would
    return case.case_id


@pytest.mark.slow
def test_cases_left_by_dead_workers_are_done_here(caplog):
    cases = [Case(f"c{i}", (f"c{i}.nii.gz",)) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        results = map_cases(_case_id_but_die_in_a_worker, cases, workers=2, pool_min_seconds=0)
    assert [result for _, result in results] == ["c0", "c1", "c2", "c3"]  # in input order
    assert "worker processes died" in caplog.text
