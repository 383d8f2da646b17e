"""Search space: parameter_config validation, Auptimizer's grid sizes and order, conditional dims."""
from __future__ import annotations

import optuna
import pytest

from aup.proposer_ext import Dimension, ProposerError, SearchSpace
from aup.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)
space_of = SearchSpace.from_parameter_config


def test_int_grid_is_auptimizer_121_with_first_parameter_fastest() -> None:
    grid = space_of([{"name": "a", "type": "int", "range": [0, 10]},
                     {"name": "b", "type": "int", "range": [0, 10]}]).grid()
    assert len(grid) == 121
    assert grid[:3] == [{"a": 0, "b": 0}, {"a": 1, "b": 0}, {"a": 2, "b": 0}]
    assert grid[11] == {"a": 0, "b": 1}
    assert grid[-1] == {"a": 10, "b": 10}
    assert len({tuple(p.values()) for p in grid}) == 121


def test_interval_and_n_give_18_points() -> None:
    grid = space_of([{"name": "a", "type": "int", "range": [0, 10], "interval": 2},
                     {"name": "b", "type": "int", "range": [0, 10], "n": 3}]).grid()
    assert len(grid) == 18
    assert [p["a"] for p in grid[:6]] == [0, 2, 4, 6, 8, 10]
    assert sorted({p["b"] for p in grid}) == [0, 5, 10]
    assert grid[6] == {"a": 0, "b": 5}


def test_float_interval_keeps_padded_end_point_12_points() -> None:
    grid = space_of([{"name": "x", "type": "float", "range": [0, 1], "interval": 0.2},
                     {"name": "k", "range": [0, 1]}]).grid()
    assert len(grid) == 12
    assert [p["x"] for p in grid[:6]] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # no 0.6000000000000001
    assert {p["k"] for p in grid[6:]} == {1}


def test_auptimizer_compression_example_5x5() -> None:
    entries = [{"name": f"{i}.sparsity", "type": "float", "range": [0.1, 0.9], "interval": 0.2} for i in range(2)]
    assert len(space_of(entries).grid()) == 25


def test_int_n_uses_floor_step_like_auptimizer() -> None:
    # floor(10 / 4) = 2 -> 0, 2, ..., 10: six points although n = 5 (Auptimizer's rule)
    assert space_of([{"name": "a", "range": [0, 10], "n": 5}]).grid()[-1] == {"a": 10}
    assert len(space_of([{"name": "a", "range": [0, 10], "n": 5}]).grid()) == 6
    # more points than integers: step 1, never a zero step
    assert len(space_of([{"name": "a", "range": [0, 2], "n": 10}]).grid()) == 3


def test_float_count_matches_values_where_auptimizer_miscounted() -> None:
    assert [p["x"] for p in space_of([{"name": "x", "type": "float", "range": [0, 0.6],
                                        "interval": 0.2}]).grid()] == [0.0, 0.2, 0.4, 0.6]


def test_conditional_grid_enumerates_children_only_under_their_parent() -> None:
    space = SearchSpace([
        Dimension("compressor", "choice", choices=("l1", "level")),
        Dimension("sparsity", "float", 0.5, 0.9, interval=0.2),
        Dimension("groups", "int", 1, 2, condition=("compressor", "l1")),
    ])
    grid = space.grid()
    # l1: 3 sparsities x 2 groups; level: 3 sparsities
    assert len(grid) == 9
    assert all("groups" not in p for p in grid if p["compressor"] == "level")
    assert sum(1 for p in grid if p["compressor"] == "l1") == 6
    assert grid[0] == {"compressor": "l1", "sparsity": 0.5, "groups": 1}
    assert grid[1] == {"compressor": "level", "sparsity": 0.5}


def test_condition_with_several_parent_values() -> None:
    space = SearchSpace([
        Dimension("compressor", "choice", choices=("l1", "fpgm", "level")),
        Dimension("dependency_aware", "choice", choices=(True, False), condition=("compressor", ("l1", "fpgm"))),
    ])
    assert len(space.grid()) == 5


def test_suggest_skips_inactive_dimensions() -> None:
    space = SearchSpace([
        Dimension("compressor", "choice", choices=("l1", "level")),
        Dimension("groups", "int", 1, 4, condition=("compressor", "l1")),
    ])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        params = space.suggest(trial)
        assert ("groups" in params) == (params["compressor"] == "l1")
        assert trial.params == params
        seen.add(params["compressor"])
        study.tell(trial, 0.0)
    assert seen == {"l1", "level"}


def test_distributions_and_add() -> None:
    space = space_of([{"name": "lr", "type": "float", "range": [1e-4, 1e-1], "log": True}])
    space.add([Dimension("bits", "choice", choices=(4, 8))])
    assert space.names == ["lr", "bits"]
    dists = space.distributions()
    assert isinstance(dists["lr"], optuna.distributions.FloatDistribution) and dists["lr"].log
    assert dists["bits"].choices == (4, 8)


@pytest.mark.parametrize("entries, message", [
    ([{"name": "a", "range": [5, 1]}], "parameter_config[0].range: the range [5, 1] is empty"),
    ([{"name": "a", "type": "float", "range": []}], "parameter_config[0].range: expected [min, max]"),
    ([{"name": "a", "type": "double", "range": [0, 1]}], "parameter_config[0].type: expected one of float, int, choice"),
    ([{"name": "a", "type": "float", "range": [0, 1], "log": True}], "parameter_config[0].range: a log-scaled range"),
    ([{"name": "a"}, {"name": "b", "type": "choice", "range": []}], "parameter_config[1].range: a choice needs"),
    ([{"name": "a"}, {"name": "a"}], "parameter_config[1].name: the name 'a' is used twice"),
    ([{"name": "n_iterations"}], "parameter_config[0].name: 'n_iterations' is reserved"),
    ([{"name": "a", "rnage": [0, 1]}], "parameter_config[0].rnage: unknown key (did you mean 'range'?)"),
    ([{"name": "a", "range": [0.5, 2]}], "parameter_config[0].range: expected two integers"),
    ([{"name": "a", "range": [0, 4], "interval": 0}], "parameter_config[0].interval: expected a positive step"),
    ([{"name": "a", "range": [0, 4], "n": 1}], "parameter_config[0].n: expected an integer >= 2"),
    ([{"type": "int"}], "parameter_config[0].name: missing"),
    ([{"name": "b", "range": [0, 1], "condition": ["a", 1]}], "parameter_config[0].condition: the parent 'a'"),
])
def test_bad_parameter_config_is_one_clear_line(entries: list, message: str) -> None:
    with pytest.raises(ProposerError) as info:
        space_of(entries)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


def test_auptimizer_defaults_int_zero_one() -> None:
    assert space_of([{"name": "flag"}]).grid() == [{"flag": 0}, {"flag": 1}]


def test_unrunnable_grid_is_refused_before_enumerating() -> None:
    entries = [{"name": f"p{i}", "type": "float", "range": [0, 100], "interval": 0.5} for i in range(4)]
    with pytest.raises(ProposerError, match=r"the grid has up to 1,632,240,801 points"):
        space_of(entries).grid()
