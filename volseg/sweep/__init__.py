"""Hyperparameter search with Optuna, as a Hydra sweeper: ``volseg train -m hparams_search=optuna``.

`search_space` turns Hydra's sweep grammar into Optuna distributions, `optuna_sweeper` runs the
study (resumable, pruned trials, failed trials recorded), `pruning` reports a training run's
validation metric to its trial, and `study_report` charts a study beside the sweep's
leaderboard. Hydra finds the sweeper as
``hydra_plugins.volseg_optuna_sweeper.VolsegOptunaSweeper``.
"""
