"""volseg's Optuna sweeper, where Hydra looks for sweepers: the ``hydra_plugins`` namespace.

Hydra imports every module here at start-up, so this one stays light: the sweeper itself,
`volseg.sweep.optuna_sweeper.OptunaSweeper`, and Optuna are imported only when a sweep uses it
(``volseg train -m hparams_search=optuna``).
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class VolsegOptunaSweeper(Sweeper):
    """The Hydra-visible name of `volseg.sweep.optuna_sweeper.OptunaSweeper` (same arguments)."""

    def __init__(self, **settings: Any) -> None:
        from volseg.sweep.optuna_sweeper import OptunaSweeper

        self.sweeper = OptunaSweeper(**settings)

    def setup(self, **context: Any) -> None:
        self.sweeper.setup(**context)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
