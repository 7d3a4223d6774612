"""Hydra's sweep grammar as Optuna distributions: what a trial may try for each key.

``key=choice(a,b,c)`` (or ``key=a,b,c``) is categorical; ``key=range(1,8,2)`` takes integers (or
floats) from 1 to 7 in steps of 2, like Python's range; ``key=interval(1e-4,1e-2)`` is continuous
(integer when both ends are); ``tag(log, ...)`` samples a range or interval on a log scale. The
same grammar works in ``hydra.sweeper.params`` and on the command line. Every choice is written
back into the job's overrides exactly as Hydra would write it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


@dataclass
class SearchSpace:
    """What to search and what stays fixed.

    Attributes:
        distributions: key -> Optuna distribution, in the order given.
        choice_strings: for categorical keys, each choice as its override string.
        fixed: the overrides every trial gets as they are (``key=value``).
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    choice_strings: dict[str, list[str]] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then ``key=value`` for each sampled value."""
        sampled = []
        for key, distribution in self.distributions.items():
            value = params[key]
            if isinstance(distribution, CategoricalDistribution):
                value = self.choice_strings[key][distribution.to_internal_repr(value)]
            sampled.append(f"{key}={value}")
        return [*self.fixed, *sampled]

    def grid(self) -> dict[str, list]:
        """The search space as a grid (`optuna.samplers.GridSampler`): every key must be a
        choice or an integer range.

        Raises:
            ValueError: a key is continuous (``interval``) or a stepped float range.
        """
        grid = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[key] = list(distribution.choices)
            elif isinstance(distribution, IntDistribution) and not distribution.log:
                grid[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
            else:
                raise ValueError(f"{key}: the grid sampler takes choice(...) or range(...) of "
                                 f"integers only, got {distribution}")
        return grid


def parse(arguments: Sequence[str], parser: OverridesParser | None = None) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` entries and command-line overrides.

    ``arguments`` are ``key=value`` strings; later ones win over earlier ones for one key.

    Raises:
        ValueError: a sweep this sampler cannot express (an empty choice, a range with no
            value), naming the key.
    """
    parser = parser or OverridesParser.create()
    space = SearchSpace()
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides(list(arguments)):
        by_key[override.get_key_element()] = override
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = distribution(override)
            if isinstance(space.distributions[key], CategoricalDistribution):
                space.choice_strings[key] = list(override.sweep_string_iterator())
        else:
            space.fixed.append(f"{key}={override.get_value_element_as_str()}")
    return space


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    key, sweep = override.get_key_element(), override.value()
    log = "log" in sweep.tags
    if isinstance(sweep, ChoiceSweep):
        if not sweep.list:
            raise ValueError(f"{key}: an empty choice")
        values = [_plain(v) for v in override.sweep_iterator()]
        return CategoricalDistribution(values)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())
        if not values:
            raise ValueError(f"{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) is empty")
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(values[0], values[-1], log=log, step=1 if log else sweep.step)
        return FloatDistribution(float(values[0]), float(values[-1]), log=log,
                                 step=None if log else float(sweep.step))
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise ValueError(f"{key}: {type(sweep).__name__} is not a sweep the Optuna sweeper takes")


def _plain(value: Any) -> Any:
    """A choice as Optuna stores it: None, bool, int, float or str (lists and dicts as text)."""
    if isinstance(value, QuotedString):
        return value.text
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
