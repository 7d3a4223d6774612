"""A leaderboard of every job of a sweep (``volseg report <multirun dir>``: `volseg.cli.report`).

Reads each job folder's ``.hydra/overrides.yaml`` and ``metrics.json`` (written by
`volseg.engine.train.train`, or `write_failure` for a job that raised) and ranks the jobs by
``--metric`` (default ``val/dice``, highest first; failed and missing jobs last). A job folder
without ``metrics.json`` was killed or is still running: it is listed as ``missing``.

A job is named by its *configuration*: the overrides that differ between the jobs read
(``model=unet3d loss=dice``); the overrides every job shares are printed once above the table.
When the jobs override ``data.fold`` (``-m data.fold=0,1,2,3,4``, possibly crossed with other
overrides), the jobs whose overrides differ only in the fold form one configuration, reported
as mean ± sample standard deviation (n - 1) over its completed folds for every numeric column.

Writes into the (first) folder given, or ``--output``:

- ``leaderboard.md``: the ranking (and, for k-fold sweeps, every job below it);
- ``leaderboard.csv``: the ranking, one row per job, or per configuration for k-fold sweeps
  (``<column>_mean`` and ``<column>_std`` for every numeric column);
- ``leaderboard_jobs.csv``: k-fold sweeps only, one row per job;
- ``leaderboard.png``: the metric per configuration as horizontal bars (error bars: std);

and prints the Markdown table. Exits 2 when a folder does not exist or holds no job.

From Python (a notebook): ``load_runs(path)`` gives one flat dictionary per job.
"""

from volseg.report.jobs import configuration_labels, find_job_dirs, load_runs
from volseg.report.leaderboard import write_leaderboard
from volseg.report.ranking import aggregate_folds, rank

__all__ = ["aggregate_folds", "configuration_labels", "find_job_dirs", "load_runs", "rank",
           "write_leaderboard"]
