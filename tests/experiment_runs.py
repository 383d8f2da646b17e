"""Run an experiment given as a dict through the runner in this process, as ``python -m aup`` would,
and read back what it stored: the runner tests' one way to do it."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from aup.runner.experiment import run_experiment


def run_in_process(tmp_path: Path, exp: dict[str, Any], width: int = 200) -> tuple[Any, optuna.Study, str]:
    """(the run's result, its study in ``tmp_path/aup.db``, what it printed at ``width`` columns)."""
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(exp))
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    console = Console(file=io.StringIO(), width=width)
    result = run_experiment(str(path), url, console=console, live=False)
    study = optuna.load_study(study_name=result.study_name, storage=url)
    return result, study, console.file.getvalue()
