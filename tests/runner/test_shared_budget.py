"""``join.SharedBudget``: a proposer of its own (the contract, explicitly), not a proxy of the wrapped one."""
from __future__ import annotations

import optuna
from optuna.trial import TrialState

from aup.proposer_ext import SearchSpace, build_proposer, build_sampler
from aup.proposer_ext.common import Proposal
from aup.proposer_ext.contract import ProposerContract
from aup.runner.join import SharedBudget

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_shared_budget_counts_other_runners_trials_and_answers_the_contract_itself() -> None:
    space = SearchSpace.from_parameter_config([{"name": "x", "type": "float", "range": [0, 1]}])
    study = optuna.create_study(direction="maximize", sampler=build_sampler("random", {}, 1, space=space))
    inner = build_proposer("random", {}, space, study, 4, 1)
    other = study.ask()  # another runner's trial, made after this runner built its proposer
    study.tell(other, 0.5)
    shared = SharedBudget(inner, study, 4)
    assert isinstance(shared, ProposerContract)
    assert (shared.name, shared.total, shared.requeues_interrupted) == ("random", 4, False)
    ran = 0
    while (proposal := shared.propose()) is not None:
        assert isinstance(proposal, Proposal)
        assert not shared.finished  # a trial of its own is running
        study.tell(proposal.trial, proposal.params["x"])
        shared.complete(proposal.trial.number, TrialState.COMPLETE, proposal.params["x"])
        ran += 1
    assert ran == 3  # the other runner's trial used up one of the 4 slots
    assert shared.finished and not inner.finished  # the wrapped proposer counts only its own 3
    assert not hasattr(SharedBudget, "__getattr__")  # no member reaches the wrapped proposer by accident
