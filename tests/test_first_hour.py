"""What a new user meets in the first hour (issue 25): option order, refused commands, the end of a run.

CLI tests run ``python -m aup`` as a user does (subprocesses) where it is about the command line.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from aup.runner import join as join_module
from aup.runner.progress import Progress
from aup.runner.run_end import finish_run

SCRIPTS = Path(__file__).parent / "scripts"


def _experiment(tmp_path: Path, **overrides: object) -> Path:
    exp = {"name": "order", "script": str(SCRIPTS / "objective.py"), "resource": "cpu", "proposer": "random", "target": "max",
           "n_samples": 1, "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}], **overrides}
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(exp))
    return path


def _aup(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUP_STORAGE"}
    return subprocess.run([sys.executable, "-m", "aup", *args], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=180)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_options_before_the_experiment_file(tmp_path: Path) -> None:
    """Item 10: ``python -m aup --storage URL EXP.json`` runs (argparse order), like the file-first order."""
    _experiment(tmp_path)
    url = f"sqlite:///{tmp_path / 'first.db'}"
    done = _aup(tmp_path, "--storage", url, "--no-live", "exp.json")
    assert done.returncode == 0, done.stderr
    assert "order: finished" in done.stdout
    assert [t.state for t in optuna.load_study(study_name="order", storage=url).trials] == [TrialState.COMPLETE]
    listed = _aup(tmp_path, "--storage", url, "list", "--json")  # and before a view command
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["order"]


@pytest.mark.parametrize("args", [
    ["run", "exp.json", "--join", "--storage", "sqlite:///new.db"],
    ["exp.json", "--join", "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none"],
    ["worker", "order", "--storage", "sqlite:///new.db"],
    ["run", "exp.json", "--resume", "--storage", "sqlite:///new.db"],
])
def test_a_refused_command_writes_nothing(tmp_path: Path, args: list[str]) -> None:
    """Item 11: a refused join (SQLite store, or a server with no such study) leaves no database, no lock."""
    _experiment(tmp_path)
    before = _files(tmp_path)
    done = _aup(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert _files(tmp_path) == before


def test_one_time_run_prints_no_empty_brackets() -> None:
    """Item 13: a trial without hyperparameters reads ``trial 0 done: 0.98``, not ``0.98  ()``."""
    out = io.StringIO()
    progress = Progress("once", console=Console(file=out, width=200), live=False)
    progress.finished(0, "COMPLETE", 0.979955, {}, None)
    progress.finished(1, "COMPLETE", 0.5, {"lr": 0.1}, None)
    lines = out.getvalue().splitlines()
    assert lines[0].rstrip() == "trial 0 done: 0.979955"
    assert lines[1] == "trial 1 done: 0.5  (lr=0.1)"


def test_a_worker_that_is_done_says_so_while_trials_run_elsewhere(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 12: a joined worker finishing while another runner works does not claim the experiment finished."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="shared")
    for value in (0.5, 0.7):
        study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=value))
    study.ask()  # a trial another runner is still running
    monkeypatch.setattr(join_module, "others_running", lambda _study: 1)
    exp = SimpleNamespace(resource_args=SimpleNamespace(save_model=False), objectives=["score"], n_samples=3,
                          directions=["maximize"], constraints=None, recommend=None, stop="budget")
    out = io.StringIO()
    proposer = SimpleNamespace(total=None)  # the runner's proposer; only its planned total is read here
    result = finish_run(study, exp, proposer, status="finished", reason=None, shared=True, joined=True, single=True,
                        workingdir=tmp_path, console=Console(file=out, width=200), storage_url="postgresql://x/y")
    text = out.getvalue()
    assert result.exit_code == 0
    assert "shared: this worker is done; 1 trial still running elsewhere (3 trials of 3 planned" in text
    assert "shared: finished" not in text
    assert "status" not in study.user_attrs  # the last runner marks the study


def test_piped_run_output_is_not_squeezed_to_80_columns(tmp_path: Path) -> None:
    """Item 16: ``python -m aup EXP.json > file`` keeps the end-of-run table at its full width."""
    names = ["a_rather_long_hyperparameter_name", "another_rather_long_hyperparameter"]
    _experiment(tmp_path, target={"score": "max", "accuracy": "max"}, n_samples=2,
                parameter_config=[{"name": n, "type": "float", "range": [0.1, 1.0]} for n in ["x", *names]])
    env = {**{k: v for k, v in os.environ.items() if k != "AUP_STORAGE"}, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "aup", "exp.json", "--storage", f"sqlite:///{tmp_path / 'p.db'}"],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr
    table = done.stdout[done.stdout.index("Pareto front"):]
    row = next(line for line in table.splitlines() if names[0] in line)
    assert names[1] in row and "…" not in table  # one line per trial, nothing cut


def test_output_folder_is_scratch_unless_the_model_is_kept(tmp_path: Path) -> None:
    """Item 8: ``aup.output_folder`` is removed when the trial's process exits; with save_model it is kept."""
    code = ("import aup, os, sys; folder = aup.output_folder({}); open(os.path.join(folder, 'm.onnx'), 'w').write('x');"
            "kept = aup.output_folder({'save_model': True, 'folder_name': 'exp-3'}); print(folder); print(kept)")
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    scratch, kept = done.stdout.split()
    assert Path(scratch).parent == tmp_path / "tmp" and not Path(scratch).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert kept == os.path.join("aup_models", "exp-3") and (tmp_path / kept).is_dir()


@pytest.mark.slow  # runs the deploy example end to end (several trials, ONNX export)
def test_deploy_example_keeps_its_best_model_and_leaves_no_scratch(tmp_path: Path) -> None:
    """Item 8: the deploy example's trials leave no ``aup-digits-*`` folder; its best ONNX file is kept."""
    pytest.importorskip("onnxruntime")
    root = Path(__file__).parents[1]
    (tmp_path / "deploy").mkdir()
    (tmp_path / "tmp").mkdir()
    for source, target in ((root / "experiments" / "digits_model.py", tmp_path / "digits_model.py"),
                           (root / "experiments" / "deploy" / "deploy_digits.py", tmp_path / "deploy" / "deploy_digits.py")):
        target.write_text(source.read_text())
    exp = json.loads((root / "experiments" / "deploy" / "exp_deploy_int8.json").read_text())
    assert exp["resource_args"]["save_model"] is True
    exp.update(workingdir=str(tmp_path / "deploy"), n_samples=2, n_parallel=1)
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    env = {**{k: v for k, v in os.environ.items() if k != "AUP_STORAGE"}, "TMPDIR": str(tmp_path / "tmp"),
           "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "aup", "exp.json", "--storage", f"sqlite:///{tmp_path / 'd.db'}"],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("aup-")] == []
    kept = tmp_path / "deploy" / "aup_models" / "digits_deployed_int8"
    assert (kept / "digits.onnx").is_file(), done.stdout
    assert f"best model (trial" in done.stdout and str(kept) in done.stdout
    assert [p.name for p in (tmp_path / "deploy" / "aup_models").iterdir()] == ["digits_deployed_int8"]
