"""``"allocation": {"mode": "seed"}``: the runner queues trials split by the first trial's profile."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from aup.compression.allocation import PROFILE_ATTR, Allocation
from aup.runner.seeding import SEED_ATTR, SEEDED_ATTR, seed_trials
from experiment_runs import run_in_process

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "allocated.py"
DIMS = [(f"sparsity ({n})", n, 0.1, 0.8) for n in ("conv1", "conv2", "conv3")]
PROFILE = {"sizes": {"conv1": 72, "conv2": 576, "conv3": 576},
           "curves": {"conv1": {"0.5": 0.0, "0.9": 1.0}, "conv2": {"0.1": 0.3, "0.9": 1.0},
                      "conv3": {"0.5": 0.0, "0.9": 1.0}}}


def test_seeds_wait_for_the_profile_then_are_queued_once() -> None:
    study = optuna.create_study()
    plan = [(Allocation("sensitivity", 0.9, "seed", 3), DIMS)]
    assert seed_trials(study, plan, study.get_trials()) is None  # no profile reported yet
    study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={PROFILE_ATTR: PROFILE}))
    seeds = seed_trials(study, plan, study.get_trials())
    assert seeds is not None and len(seeds) == 3
    assert all(s["sparsity (conv2)"] < min(s["sparsity (conv1)"], s["sparsity (conv3)"]) for s in seeds)
    assert all(0.1 <= v <= 0.8 for s in seeds for v in s.values())
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[SEED_ATTR] for t in waiting] == [0.275, 0.45, 0.625]
    assert study.user_attrs[SEEDED_ATTR] == 3 and seed_trials(study, plan, study.get_trials()) == []


def test_no_more_seeds_than_the_budget_has_room_for() -> None:
    study = optuna.create_study()
    seeds = seed_trials(study, [(Allocation("uniform", 0.9, "seed", 3), DIMS)], [], room=1)
    assert seeds == [dict.fromkeys([d[0] for d in DIMS], 0.45)]


def test_uniform_seeds_need_no_profile() -> None:
    study = optuna.create_study()
    seeds = seed_trials(study, [(Allocation("uniform", 0.9, "seed", 2), DIMS)], [])
    assert seeds == [dict.fromkeys([d[0] for d in DIMS], t) for t in (0.3333, 0.5667)]


@pytest.mark.slow
def test_a_run_seeds_after_the_first_trial_within_its_budget(tmp_path: Path) -> None:
    exp = {"name": "seeded", "script": str(SCRIPT), "workingdir": str(tmp_path), "resource": "cpu",
           "proposer": "random", "target": "max", "n_samples": 3, "n_parallel": 1,
           "compression": {"compressor": "l1_filter",
                           "allocation": {"method": "sensitivity", "mode": "seed", "seeds": 2},
                           "config_list": [{"sparsity": {"type": "float", "range": [0.1, 0.8]},
                                            "op_names": ["conv1", "conv2", "conv3"]}]}}
    _, study, printed = run_in_process(tmp_path, exp, width=300)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert SEED_ATTR not in trials[0].user_attrs and PROFILE_ATTR in trials[0].user_attrs
    for trial in trials[1:]:  # the seeded ones: the fragile conv2 gets the least
        assert SEED_ATTR in trial.user_attrs
        assert trial.params["sparsity (conv2)"] < min(trial.params["sparsity (conv1)"], trial.params["sparsity (conv3)"])
    assert "allocation: queued 2 trials seeded" in printed
    assert len(list((tmp_path / "jobs").glob("*.sensitivity.json"))) == 1
