"""``save_model``: keep the best trial's saved model, remove the others' (only inside ``aup_models/``).

Every folder this module moves or deletes is a single safe file name directly under
``<workingdir>/aup_models`` (names come from the runner's own slugs, but they are read back from
the store, so they are checked again): an experiment name such as ``..`` or ``../../x`` can never
make aup delete anything outside that folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aup import store

if TYPE_CHECKING:
    import optuna

MODELS_DIR = "aup_models"


def model_folder(models: Path, name: Any) -> Path | None:
    """``models/name`` when ``name`` is one safe file name and the result stays inside ``models``."""
    if not isinstance(name, str) or not store.is_safe_file_name(name):
        return None
    folder = models / name
    try:
        folder.resolve().relative_to(models.resolve())
    except ValueError:
        return None
    if folder.is_symlink():
        return None
    return folder


def keep_best_model(study: "optuna.Study", workingdir: Path, best: Any) -> tuple[str | None, str]:
    """Move the best trial's saved model to ``aup_models/<safe experiment name>/``; delete the others'.

    Returns the kept folder (or None) and the line the summary shows.
    """
    models = workingdir / MODELS_DIR
    folders = [model_folder(models, _folder_name(t)) for t in study.get_trials(deepcopy=False)]
    target = models / store.slug(study.study_name)
    kept = None
    if best is not None:
        source = model_folder(models, _folder_name(best))
        if source is not None and source.is_dir():
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            shutil.move(str(source), str(target))
            kept = str(target)
        else:  # Auptimizer's examples export to <workingdir>/<folder_name>: report it where it is, untouched
            beside = model_folder(workingdir, _folder_name(best))
            if beside is not None and beside.is_dir():
                kept = str(beside)
    for folder in folders:
        if folder is not None and folder.is_dir() and folder != target:
            shutil.rmtree(folder, ignore_errors=True)
    if kept:
        study.set_user_attr("best_model_path", kept)
        return kept, f"best model (trial {best.number}): {kept}"
    return None, "save_model: the best trial saved no model (nothing under aup_models/<folder_name> or <folder_name>)"


def _folder_name(trial: Any) -> Any:
    job = trial.user_attrs.get("job_config")
    return job.get("folder_name") if isinstance(job, dict) else None
