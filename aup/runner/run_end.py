"""The end of a run: mark the study, name the recommended trial and keep its model, print the summary,
pick the exit code.

The recommended trial (``aup.views.recommend``: the best feasible one, else the least-violating one,
never nothing) is stored in the study's user attributes (``recommendation``) so that ``aup show`` and
a resumed run name the same trial; with ``save_model`` its model is the one kept.

When several runners share a study (``join``), only the last one to finish marks it finished and
keeps the best model; the others say that work goes on elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aup import store
from aup.constraints import parse_constraints
from aup.runner import join
from aup.runner.progress import best_trials, print_summary
from aup.runner.saved_models import keep_best_model
from aup.runner.state import INTERRUPTED
from aup.safe_text import shell_command
from aup.views.recommend import ATTR as RECOMMENDATION_ATTR
from aup.views.recommend import Recommendation, recommend
from aup.views.records import rows_from_frozen

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from aup.config_schema import Experiment
    from aup.proposer_ext.contract import ProposerContract

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
STOP_ATTR = "stop_rule"  # study user attribute: why the stop rule ended the search


@dataclass
class RunResult:
    study_name: str
    status: str
    exit_code: int
    reason: str | None = None
    best_model_path: str | None = None
    recommended: int | None = None  # the trial the run recommends (None: no trial completed)


def finish_run(study: "optuna.Study", exp: "Experiment", proposer: "ProposerContract", *, status: str, reason: str | None,
               shared: bool, joined: bool, single: bool, workingdir: Path, console: "Console",
               storage_url: str) -> RunResult:
    """Record how the run ended (``status``: finished, failed or interrupted) and summarise it."""
    extra: list[str] = []
    others = shared and (status == "finished" and join.others_running(study) > 0
                         or status != "finished" and joined)
    shown_status = status
    if others and status == "finished":  # the last runner to finish marks the study and prints its end
        elsewhere = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
        shown_status = (f"this worker is done; {elsewhere} trial{'s' if elsewhere != 1 else ''} still running "
                        "elsewhere" if elsewhere else "this worker is done; other runners are still working")
    elif others:
        extra.append("other runners are still working on this experiment")  # the last one marks it
    else:
        study.set_user_attr(store.ATTR_STATUS, status)
        study.set_user_attr(store.ATTR_ENDED, store.now_iso())
        if reason:
            study.set_user_attr("status_reason", reason)
    best_model = None
    best = best_trials(study, single)
    trials = study.get_trials(deepcopy=False)
    chosen = recommendation(trials, exp)
    if exp.stop == "first_feasible" and study.user_attrs.get(STOP_ATTR):
        extra.append(f"stopped early by the stop rule {study.user_attrs[STOP_ATTR]}")
    if not others:
        study.set_user_attr(RECOMMENDATION_ATTR, chosen.to_attr())
    extra.append(chosen.line)
    if status == "finished" and exp.resource_args.save_model and not others:
        kept = next((t for t in trials if t.number == chosen.trial), None)
        best_model, note = keep_best_model(study, workingdir, kept)
        extra.append(note)
    elif chosen.trial is not None and exp.constraints and not exp.resource_args.save_model:
        extra.append("(set \"resource_args\": {\"save_model\": true} to keep the recommended trial's model)")
    if status == INTERRUPTED and joined:
        extra.append("this worker stopped; its unfinished trials were queued for the other runners")
    elif status == INTERRUPTED:
        extra.append(f"interrupted; continue with: {shell_command('aup', 'resume', study.study_name)}")
    elif status == "failed":
        extra.append(f"experiment failed: {reason}")
    print_summary(console, study_name=study.study_name, status=shown_status, trials=study.get_trials(deepcopy=False),
                  objectives=exp.objectives, storage_url=storage_url, best=best, extra=extra,
                  planned=proposer.total or exp.n_samples)
    code = {"finished": EXIT_OK, "failed": EXIT_FAILED, INTERRUPTED: EXIT_INTERRUPTED}[status]
    return RunResult(study.study_name, status, code, reason, best_model, chosen.trial)


def recommendation(trials: list[Any], exp: "Experiment") -> Recommendation:
    """The run's recommended trial (``aup.views.recommend``) for these optuna trials."""
    rows = rows_from_frozen(trials, exp.objectives)
    return recommend(rows, exp.objectives, exp.directions, parse_constraints(exp.constraints or {}), exp.recommend)
