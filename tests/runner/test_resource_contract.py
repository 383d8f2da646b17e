"""The execution-resource contract suite (``aup.runner.contracts``), run on every registered resource.

Each resource of ``aup.resources`` (local processes; Ray tasks where Ray is installed, slow since it
starts a cluster) and a toy one registered here (one class + one row) must: start an attempt that
reports results, say why a failing attempt failed, stop an attempt with the runner's reason, and on
resume end the processes a killed runner left behind (``end_leftovers``). The toy resource also runs
a whole experiment, which shows that a new resource needs nothing outside its class and its row.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import pytest
from rich.console import Console

from aup.config import validate_experiment
from aup.resources import RESOURCES, ResourceRow, register_resource, unregister_resource
from aup.runner.contracts import ExecutionResource, Leftover, TrialAttempt
from aup.runner.launcher import TrialProcess
from aup.runner.orphans import PROCESS_KEY_ENV


class NiceResource(ExecutionResource):
    """A toy resource: local processes started at a lower scheduling priority (``nice``)."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded

    def attempt(self, **arguments: Any) -> TrialProcess:
        return TrialProcess(**{**arguments, "command": ["nice", "-n", "5", *arguments["command"]]})


TOY = ResourceRow("nice", NiceResource, "hidden", "local processes at a lower priority")


@pytest.fixture(autouse=True)
def toy_resource() -> Iterator[None]:
    register_resource(TOY)
    try:
        yield
    finally:
        unregister_resource(TOY.name)


def _names() -> list[Any]:
    names: list[Any] = []
    for name in [*RESOURCES, TOY.name]:
        if name == "ray":
            names.append(pytest.param(name, marks=[pytest.mark.slow, pytest.mark.skipif(
                find_spec("ray") is None, reason="Ray is not installed")]))
        elif name != "gpu":  # the same class as cpu, with a GPU pool this machine may not have
            names.append(name)
    return names


@pytest.fixture(params=_names())
def resource(request: pytest.FixtureRequest, tmp_path: Path) -> ExecutionResource:
    name = request.param
    extra: dict[str, Any] = {}
    if name == "ray":
        extra["resource_args"] = {"address": request.getfixturevalue("ray_cluster").address}
    raw = {"name": "contract", "script": str(tmp_path / "trial.py"), "resource": name, "proposer": "random",
           "target": "max", "n_samples": 1, "workingdir": str(tmp_path),
           "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}], **extra}
    (tmp_path / "trial.py").write_text("")
    loaded = validate_experiment(raw, "contract.json")
    opened = RESOURCES[name].resource_class()(loaded)
    assert isinstance(opened, ExecutionResource)
    return opened


def _attempt(resource: ExecutionResource, tmp_path: Path, code: str, **env: str) -> TrialAttempt:
    script = tmp_path / "trial.py"
    script.write_text(code)
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"folder_name": "t"}))
    attempt = resource.attempt(command=[sys.executable, str(script), str(job)], workingdir=tmp_path,
                               env={**os.environ, **env}, log_path=tmp_path / "t.out",
                               channel_path=tmp_path / "t.channel.jsonl", timeout=None, log_limit=None)
    assert isinstance(attempt, TrialAttempt)
    attempt.start()
    return attempt


def _wait(attempt: TrialAttempt, limit: float = 120) -> int:
    deadline = time.time() + limit  # a hang guard only; nothing asserts on time
    while (code := attempt.poll()) is None:
        assert time.time() < deadline, "the attempt never ended"
        time.sleep(0.02)
    return code


def test_an_attempt_reports_its_results_and_metrics(resource: ExecutionResource, tmp_path: Path) -> None:
    attempt = _attempt(resource, tmp_path, "import aup\naup.print_result(0.25)\naup.log_metrics(acc=1)\n"
                                           "aup.print_result(0.5)\n")
    assert _wait(attempt) == 0
    outcome = attempt.outcome()
    assert outcome.results == [0.25, 0.5] and outcome.metrics == {"acc": 1} and outcome.reason is None
    assert attempt.started > 0


def test_a_failing_attempt_says_why(resource: ExecutionResource, tmp_path: Path) -> None:
    attempt = _attempt(resource, tmp_path, "import sys\nprint('the data folder is missing')\nsys.exit(3)\n")
    assert _wait(attempt) == 3
    assert attempt.outcome().reason == "exit code 3: the data folder is missing"


def test_stop_ends_a_running_attempt_with_the_runners_reason(resource: ExecutionResource, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    attempt = _attempt(resource, tmp_path, f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                                           "time.sleep(600)\n")
    deadline = time.time() + 120
    while not marker.exists():
        assert time.time() < deadline and attempt.poll() is None
        time.sleep(0.02)
    attempt.stop("interrupted", grace=1.0)
    assert attempt.poll() is not None
    assert attempt.outcome().reason == "interrupted"


def test_end_leftovers_ends_what_a_killed_runner_left(resource: ExecutionResource, tmp_path: Path) -> None:
    """Resume: the attempt's processes are found by their process key, wherever the resource ran them."""
    key = uuid.uuid4().hex
    marker = tmp_path / "started"
    attempt = _attempt(resource, tmp_path, f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                                           "time.sleep(600)\n", **{PROCESS_KEY_ENV: key})
    deadline = time.time() + 120
    while not marker.exists():
        assert time.time() < deadline and attempt.poll() is None
        time.sleep(0.02)
    assert resource.end_leftovers([Leftover(None, key)]) >= 1
    code = _wait(attempt)
    assert code != 0  # killed, not finished
    assert resource.end_leftovers([Leftover(None, uuid.uuid4().hex)]) == 0  # nothing else was touched


@pytest.mark.slow  # a whole experiment with two trial processes
def test_a_registered_resource_runs_an_experiment_end_to_end(tmp_path: Path) -> None:
    """One class and one row: the experiment's "resource" accepts it and the runner uses it."""
    from aup.runner.experiment import run_experiment

    script = tmp_path / "objective.py"
    script.write_text("import os, sys, json\nimport aup\ncfg = json.load(open(sys.argv[1]))\n"
                      "aup.log_metrics(gpus=os.environ.get('CUDA_VISIBLE_DEVICES'))\naup.print_result(cfg['x'])\n")
    exp = {"name": "nice-exp", "script": str(script), "resource": "nice", "proposer": "random", "target": "max",
           "n_samples": 2, "workingdir": str(tmp_path),
           "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}]}
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(exp))
    result = run_experiment(str(path), f"sqlite:///{tmp_path / 'aup.db'}", console=Console(file=io.StringIO()),
                            live=False)
    assert result.exit_code == 0
    import optuna

    trials = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{tmp_path / 'aup.db'}").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.user_attrs.get("gpus") == "" for t in trials)  # its row: devices hidden


def test_an_unknown_resource_is_one_line_naming_the_registered_ones(tmp_path: Path) -> None:
    from aup.errors import ConfigError

    raw = {"name": "e", "script": str(tmp_path / "t.py"), "resource": "tpu", "proposer": "random",
           "target": "max", "n_samples": 1, "workingdir": str(tmp_path)}
    (tmp_path / "t.py").write_text("")
    with pytest.raises(ConfigError) as caught:
        validate_experiment(raw, "e.json")
    line = next(line for line in str(caught.value).splitlines() if "resource" in line)
    assert '"nice"' in line and '"ray"' in line and 'got "tpu"' in line
