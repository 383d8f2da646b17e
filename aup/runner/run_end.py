"""The end of a run: mark the study, keep the best model, print the summary, pick the exit code.

When several runners share a study (``join``), only the last one to finish marks it finished and
keeps the best model; the others say that work goes on elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aup import store
from aup.runner import join
from aup.runner.progress import best_trials, print_summary
from aup.runner.saved_models import keep_best_model
from aup.runner.state import INTERRUPTED
from aup.safe_text import shell_command

if TYPE_CHECKING:
    import optuna
    from rich.console import Console

    from aup.config_schema import Experiment

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class RunResult:
    study_name: str
    status: str
    exit_code: int
    reason: str | None = None
    best_model_path: str | None = None


def finish_run(study: "optuna.Study", exp: "Experiment", proposer: Any, *, status: str, reason: str | None,
               shared: bool, joined: bool, single: bool, workingdir: Path, console: "Console",
               storage_url: str) -> RunResult:
    """Record how the run ended (``status``: finished, failed or interrupted) and summarise it."""
    extra: list[str] = []
    others = shared and (status == "finished" and join.others_running(study) > 0
                         or status != "finished" and joined)
    if others:
        extra.append("other runners are still working on this experiment")  # the last one marks it
    else:
        study.set_user_attr(store.ATTR_STATUS, status)
        study.set_user_attr(store.ATTR_ENDED, store.now_iso())
        if reason:
            study.set_user_attr("status_reason", reason)
    best_model = None
    best = best_trials(study, single)
    if status == "finished" and exp.resource_args.save_model and not others:
        best_model, note = keep_best_model(study, workingdir, best[0] if best else None)
        extra.append(note)
    if status == INTERRUPTED and joined:
        extra.append("this worker stopped; its unfinished trials were queued for the other runners")
    elif status == INTERRUPTED:
        extra.append(f"interrupted; continue with: {shell_command('aup', 'resume', study.study_name)}")
    elif status == "failed":
        extra.append(f"experiment failed: {reason}")
    print_summary(console, study_name=study.study_name, status=status, trials=study.get_trials(deepcopy=False),
                  objectives=exp.objectives, storage_url=storage_url, best=best, extra=extra,
                  planned=getattr(proposer, "total", None) or exp.n_samples)
    code = {"finished": EXIT_OK, "failed": EXIT_FAILED, INTERRUPTED: EXIT_INTERRUPTED}[status]
    return RunResult(study.study_name, status, code, reason, best_model)
