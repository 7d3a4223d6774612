"""Hydra's sweep grammar as Optuna distributions, and back into job overrides."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from volseg.sweep.search_space import parse


def test_each_sweep_form_becomes_its_distribution():
    space = parse(["optimizer.lr=tag(log, interval(1e-4, 1e-2))",
                   "loss=choice(dice_ce, dice)", "model.features=4,8,16",
                   "data.batch_size=range(2, 9, 2)", "model.dropout=interval(0, 0.5)",
                   "data.patch_size=tag(log, range(16, 129))", "trainer.max_epochs=3"])
    d = space.distributions
    assert d["optimizer.lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["loss"] == CategoricalDistribution(("dice_ce", "dice"))
    assert d["model.features"] == CategoricalDistribution((4, 8, 16))
    # Python's range: 2, 4, 6, 8 (the stop is left out).
    assert d["data.batch_size"] == IntDistribution(2, 8, step=2)
    assert d["model.dropout"] == FloatDistribution(0.0, 0.5)
    assert d["data.patch_size"] == IntDistribution(16, 128, log=True)
    assert space.fixed == ["trainer.max_epochs=3"]


def test_a_trials_values_are_written_back_as_hydra_writes_them():
    space = parse(["loss=choice(dice, 'dice ce')", "optimizer.lr=interval(0.001, 0.1)",
                   "seed=7"])
    overrides = space.overrides({"loss": "dice ce", "optimizer.lr": 0.01})
    assert overrides == ["seed=7", "loss=dice\\ ce", "optimizer.lr=0.01"]
    # Hydra reads each back as the value that was sampled.
    parsed = OverridesParser.create().parse_overrides(overrides)
    assert [o.value() for o in parsed] == [7, "dice ce", 0.01]


def test_the_command_line_wins_over_the_config_for_one_key():
    space = parse(["model.features=choice(4, 8)", "model.features=choice(16, 32)"])
    assert space.distributions["model.features"].choices == (16, 32)


def test_grid_takes_choices_and_integer_ranges_only():
    assert parse(["a=1,2", "b=range(0, 3)"]).grid() == {"a": [1, 2], "b": [0, 1, 2]}
    with pytest.raises(ValueError, match="b: the grid sampler takes choice"):
        parse(["a=1,2", "b=interval(0, 1)"]).grid()


def test_an_empty_range_is_named():
    with pytest.raises(ValueError, match=r"x: range\(5, 1, 1\) is empty"):
        parse(["x=range(5, 1)"])
