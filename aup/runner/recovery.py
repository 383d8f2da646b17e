"""Recovery on resume: what a killed or interrupted runner left behind.

A runner killed with SIGKILL leaves trials RUNNING in the study and possibly their processes alive.
On resume each such trial's processes are stopped, the trial is marked FAIL "interrupted" and its
configuration is queued again, so ``aup resume`` re-runs exactly the unfinished work.
"""
from __future__ import annotations

import os
import signal
import socket
from typing import TYPE_CHECKING, Any

from aup import store
from aup.config import LoadedExperiment, validate_experiment
from aup.errors import UserError
from aup.runner.state import INTERRUPTED

if TYPE_CHECKING:
    import optuna

# Proposers that re-propose interrupted configurations themselves (grid points, hyperband rungs:
# their state is in the trials); a queued copy would be handed out in place of their own.
_SELF_REQUEUING = frozenset({"sequence", "hyperband", "bohb"})


def recover_interrupted(study: "optuna.Study") -> list[tuple[int, dict[str, Any]]]:
    """Trials left RUNNING by a killed runner: stop leftovers, mark FAIL "interrupted".

    Returns (number, params) of each, to be queued again once the proposer exists.
    """
    from optuna.trial import TrialState

    requeue = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        kill_orphans(trial.user_attrs.get("job_config_path"))
        store.set_trial_user_attrs(study, trial, {"status_reason": INTERRUPTED, INTERRUPTED: True})
        study.tell(trial.number, state=TrialState.FAIL)
        requeue.append((trial.number, dict(trial.params)))
    return requeue


def requeue(study: "optuna.Study", proposer: Any, number: int, params: dict[str, Any]) -> None:
    """Queue an interrupted trial's params so that the next ``ask`` runs the same configuration."""
    if getattr(proposer, "requeues_interrupted", getattr(proposer, "name", None) in _SELF_REQUEUING):
        return
    study.enqueue_trial(params, user_attrs={"requeued_from": number})


def kill_orphans(job_config_path: str | None) -> None:
    """Stop trial processes a killed runner left behind: those whose command line holds the job path."""
    if not job_config_path or not os.path.isdir("/proc"):
        return
    needle = job_config_path.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                arguments = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in arguments:
            try:
                os.killpg(int(entry.name), signal.SIGKILL)  # trials lead their own process group
            except ProcessLookupError:
                _quiet_kill(int(entry.name))
            except PermissionError:
                pass


def _quiet_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def alive_here(runner_info: dict[str, Any]) -> bool:
    """True if the runner recorded in the study is a live aup process on this host."""
    pid = runner_info.get("pid")
    if runner_info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid that is not a Python process is not our runner
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"aup" in handle.read()
    except OSError:
        return True


def stored_experiment(storage: Any, name: str) -> LoadedExperiment:
    """The experiment JSON stored in study ``name``, validated again; UserError if it cannot resume."""
    study = store.load_experiment_study(storage, name)
    attrs = study.user_attrs
    status = attrs.get(store.ATTR_STATUS)
    if status == "finished":
        raise UserError(f"experiment {name!r} already finished; nothing to resume")
    runner_info = attrs.get("runner") or {}
    if status == "running" and alive_here(runner_info):
        raise UserError(f"experiment {name!r} is still running (pid {runner_info.get('pid')})")
    raw = attrs.get(store.ATTR_EXPERIMENT)
    if not isinstance(raw, dict):
        raise UserError(f"experiment {name!r} has no stored experiment JSON; it was not created by aup")
    source = attrs.get(store.ATTR_EXPERIMENT_PATH) or name
    workingdir = attrs.get(store.ATTR_WORKINGDIR)
    loaded = validate_experiment({**raw, "workingdir": workingdir or raw.get("workingdir")}, source)
    loaded.raw = raw
    return loaded
