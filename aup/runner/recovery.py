"""Recovery on resume: what a killed or interrupted runner left behind.

A runner killed with SIGKILL leaves trials RUNNING in the study and possibly their processes alive.
On resume each such trial's processes are stopped, the trial is marked FAIL "interrupted" and its
configuration is queued again, so ``aup resume`` re-runs exactly the unfinished work.
"""
from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from aup import store
from aup.config import LoadedExperiment, validate_experiment
from aup.errors import UserError
from aup.runner.state import INTERRUPTED, PROCESS_KEY, PROCESS_KEY_ENV

if TYPE_CHECKING:
    import optuna

# Proposers that re-propose interrupted configurations themselves (grid points, hyperband rungs:
# their state is in the trials); a queued copy would be handed out in place of their own.
_SELF_REQUEUING = frozenset({"sequence", "hyperband", "bohb"})


def recover_interrupted(study: "optuna.Study", keep: frozenset[str] = frozenset()) -> list[tuple[int, dict[str, Any]]]:
    """Trials left RUNNING by a killed runner: stop leftovers, mark FAIL "interrupted".

    Returns (number, params) of each, to be queued again once the proposer exists. Trials whose
    ``runner`` (``host:pid``) is in ``keep`` belong to live workers on the same study and are left alone.
    """
    from optuna.trial import TrialState

    requeue = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("runner") in keep:
            continue
        kill_orphans(trial.user_attrs.get("job_config_path"), trial.user_attrs.get(PROCESS_KEY))
        store.set_trial_user_attrs(study, trial, {"status_reason": INTERRUPTED, INTERRUPTED: True})
        study.tell(trial.number, state=TrialState.FAIL)
        requeue.append((trial.number, dict(trial.params)))
    return requeue


def requeue(study: "optuna.Study", proposer: Any, number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's params so that the next ``ask`` runs the same configuration."""
    if getattr(proposer, "requeues_interrupted", getattr(proposer, "name", None) in _SELF_REQUEUING):
        return
    study.enqueue_trial(params, user_attrs={"requeued_from": number})


def kill_orphans(job_config_path: str | None, process_key: str | None = None) -> int:
    """Stop trial processes a killed runner left behind; returns how many were signalled.

    A process belongs to the trial when its environment holds the trial's ``AUP_PROCESS_KEY`` (the
    key is recorded before the process starts and inherited by everything it spawns, whatever its
    process group) or, for trials recorded without a key, when its command line holds the job path.
    """
    if not os.path.isdir("/proc") or not (job_config_path or process_key):
        return 0
    key = f"{PROCESS_KEY_ENV}={process_key}".encode() if process_key else None
    needle = job_config_path.encode() if job_config_path else None
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _belongs(entry.name, key, needle):
            _kill_group_or_process(int(entry.name))
            killed += 1
    return killed


def _belongs(pid: str, key: bytes | None, needle: bytes | None) -> bool:
    try:
        if key is not None:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                return key in handle.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return needle in handle.read().split(b"\0")
    except OSError:  # gone, or another user's process
        return False


def _kill_group_or_process(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # a trial leads its own process group
            os.killpg(pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError):
        pass
    _quiet_kill(pid)


def _quiet_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
