"""Recovery on resume: what a killed or interrupted runner left behind.

A runner killed with SIGKILL leaves trials RUNNING in the study and possibly their processes alive.
On resume each such trial's processes are stopped, the trial is marked FAIL "interrupted" and its
configuration is queued again, so ``aup resume`` re-runs exactly the unfinished work.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aup import store
from aup.config import LoadedExperiment, validate_experiment
from aup.errors import UserError
from aup.runner.contracts import Leftover
from aup.runner.state import INTERRUPTED, PROCESS_KEY

if TYPE_CHECKING:
    import optuna

    from aup.proposer_ext.contract import ProposerContract
    from aup.runner.contracts import ExecutionResource



def recover_interrupted(study: "optuna.Study", resource: "ExecutionResource",
                        keep: frozenset[str] = frozenset()) -> list[tuple[int, dict[str, Any]]]:
    """Trials left RUNNING by a killed runner: stop leftovers, mark FAIL "interrupted".

    Returns (number, params) of each, to be queued again once the proposer exists. Trials whose
    ``runner`` (``host:pid``) is in ``keep`` belong to live workers on the same study and are left alone.
    Leftover processes are ended by the execution resource, wherever it ran them
    (``ExecutionResource.end_leftovers``: this host, or a task on every Ray node too).
    """
    from optuna.trial import TrialState

    requeue = []
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get("runner") not in keep]
    leftovers = [Leftover(t.user_attrs.get("job_config_path"), t.user_attrs.get(PROCESS_KEY)) for t in running]
    if leftovers:
        resource.end_leftovers(leftovers)
    for trial in running:
        store.set_trial_user_attrs(study, trial, {"status_reason": INTERRUPTED, INTERRUPTED: True})
        study.tell(trial.number, state=TrialState.FAIL)
        requeue.append((trial.number, dict(trial.params)))
    return requeue


def requeue(study: "optuna.Study", proposer: "ProposerContract", number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's params so that the next ``ask`` runs the same configuration
    (unless the proposer proposes it again itself: grid points, hyperband rungs; a queued copy
    would be handed out in place of its own)."""
    if proposer.requeues_interrupted:
        return
    study.enqueue_trial(params, user_attrs={"requeued_from": number})


def stored_experiment(storage: Any, name: str, *, joining: bool = False) -> LoadedExperiment:
    """The experiment JSON stored in study ``name``, validated again; UserError if it cannot resume
    (a runner ``joining`` a running study leaves the status to ``join.running_study``)."""
    study = store.load_experiment_study(storage, name)
    attrs = study.user_attrs
    status = attrs.get(store.ATTR_STATUS)
    if status == "finished" and not joining:
        raise UserError(f"experiment {name!r} already finished; nothing to resume")
    raw = attrs.get(store.ATTR_EXPERIMENT)
    if not isinstance(raw, dict):
        raise UserError(f"experiment {name!r} has no stored experiment JSON; it was not created by aup")
    source = attrs.get(store.ATTR_EXPERIMENT_PATH) or name
    workingdir = attrs.get(store.ATTR_WORKINGDIR)
    loaded = validate_experiment({**raw, "workingdir": workingdir or raw.get("workingdir")}, source)
    loaded.raw = raw
    return loaded
