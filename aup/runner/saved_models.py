"""``save_model``: keep the best trial's saved model, remove the others' (only inside ``aup_models/``)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def keep_best_model(study: "optuna.Study", workingdir: Path, best: Any) -> tuple[str | None, str]:
    """Move the best trial's saved model to ``aup_models/<experiment>/``; delete the others'.

    Returns the kept folder (or None) and the line the summary shows.
    """
    models = workingdir / "aup_models"
    folders = [models / t.user_attrs["job_config"]["folder_name"]
               for t in study.get_trials(deepcopy=False)
               if isinstance(t.user_attrs.get("job_config"), dict) and "folder_name" in t.user_attrs["job_config"]]
    target = models / study.study_name
    kept = None
    if best is not None:
        folder_name = best.user_attrs.get("job_config", {}).get("folder_name", "")
        source = models / folder_name
        if source.is_dir() and source != models:
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(source), str(target))
            kept = str(target)
        elif folder_name and (workingdir / folder_name).is_dir():
            kept = str(workingdir / folder_name)  # Auptimizer's examples export to <workingdir>/<folder_name>
    for folder in folders:
        if folder.is_dir() and folder != target:
            shutil.rmtree(folder, ignore_errors=True)
    if kept:
        study.set_user_attr("best_model_path", kept)
        return kept, f"best model (trial {best.number}): {kept}"
    return None, "save_model: the best trial saved no model (nothing under aup_models/<folder_name> or <folder_name>)"
