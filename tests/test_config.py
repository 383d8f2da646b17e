"""Validation of the experiment JSON: every problem one line naming the key, before anything runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from aup.config import load_experiment, resolve_script, validate_experiment
from aup.errors import ConfigError


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    script = tmp_path / "train.py"
    script.write_text("import aup\n")
    return tmp_path


def base(**overrides: Any) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "name": "e", "script": "train.py", "resource": "cpu", "proposer": "random", "target": "max",
        "n_samples": 2, "parameter_config": [{"name": "lr", "type": "float", "range": [1e-4, 1e-1], "log": True}],
    }
    exp.update(overrides)
    return exp


def problems(raw: dict[str, Any], workdir: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_experiment(raw, "exp.json", base_dir=workdir)
    lines = str(info.value).splitlines()
    assert all(line.startswith("exp.json: ") for line in lines)
    return [line[len("exp.json: "):] for line in lines]


def test_a_valid_experiment_is_parsed_with_auptimizer_defaults(workdir: Path) -> None:
    loaded = validate_experiment(base(), "exp.json", base_dir=workdir)
    exp = loaded.experiment
    assert exp.n_parallel == 1 and exp.random_seed == 0
    assert exp.job_failure.ignore_fail is False and exp.job_failure.job_retries == 0
    assert exp.objectives == ["score"] and exp.directions == ["maximize"]
    assert loaded.workingdir == workdir and loaded.command == [sys.executable, str(workdir / "train.py")]
    assert exp.parameter_dicts[0]["log"] is True


def test_job_failure_section_defaults_to_three_retries(workdir: Path) -> None:
    exp = validate_experiment(base(job_failure={"ignore_fail": True}), "exp.json", base_dir=workdir).experiment
    assert exp.job_failure.job_retries == 3


def test_dict_target_gives_objectives_and_directions(workdir: Path) -> None:
    exp = validate_experiment(base(target={"score": "max", "model_bytes": "min"}), "x", base_dir=workdir).experiment
    assert exp.objectives == ["score", "model_bytes"] and exp.directions == ["maximize", "minimize"]


def test_several_objectives_default_to_tpe(workdir: Path) -> None:
    # chosen by benchmarks/search_efficiency.py: nsga2's first generation (50 trials) is random
    raw = base(target={"score": "max", "model_bytes": "min"})
    del raw["proposer"]
    assert validate_experiment(raw, "x", base_dir=workdir).experiment.proposer == "tpe"


def test_unknown_keys_get_did_you_mean_everywhere(workdir: Path) -> None:
    raw = base(n_sample=3, runtime_args={"timout": 3}, resource_args={"save_models": True},
               job_failure={"ignore_fails": True})
    raw["parameter_config"][0]["rnage"] = [0, 1]
    found = problems(raw, workdir)
    assert "n_sample: unknown key (did you mean 'n_samples'?)" in found
    assert "runtime_args.timout: unknown key (did you mean 'timeout'?)" in found
    assert "resource_args.save_models: unknown key (did you mean 'save_model'?)" in found
    assert "job_failure.ignore_fails: unknown key (did you mean 'ignore_fail'?)" in found
    assert "parameter_config[0].rnage: unknown key (did you mean 'range'?)" in found


def test_proposer_options_are_accepted_only_for_their_proposer(workdir: Path) -> None:
    validate_experiment(base(proposer="hyperband", max_iter=27, eta=3), "x", base_dir=workdir)
    assert problems(base(max_iter=27), workdir) == [
        "max_iter: not an option of the 'random' proposer"]
    assert problems(base(proposer="randm"), workdir)[0].startswith(
        "proposer: unknown proposer 'randm' (did you mean 'random'?)")


@pytest.mark.parametrize(("change", "expected"), [
    ({"n_parallel": 0}, "n_parallel: input should be greater than or equal to 1, got 0"),
    ({"n_parallel": "2"}, 'n_parallel: expected an integer, got "2"'),
    ({"n_samples": 2.5}, "n_samples: expected an integer, got 2.5"),
    ({"target": "maximize"}, 'target: expected "max", "min" or an object {objective: "max"|"min"}, got "maximize"'),
    ({"resource": "tpu"}, 'resource: expected "cpu", "gpu" or "ray", got "tpu"'),
    ({"runtime_args": {"timeout": -1}}, "runtime_args.timeout: input should be greater than 0, got -1"),
    ({"runtime_args": {"env": {"A": 1}}}, "runtime_args.env.A: expected a string, got 1"),
    ({"resource_args": {"save_model": "yes"}}, 'resource_args.save_model: expected true or false, got "yes"'),
    ({"job_failure": {"job_retries": -1}}, "job_failure.job_retries: input should be greater than or equal to 0, got -1"),
    ({"name": 3}, "name: expected a string, got 3"),
    ({"resource_args": {"multi_res_labels": ["score"]}},
     "resource_args.multi_res_labels: 'score' is a name the runner records itself; choose another label"),
])
def test_wrong_types_and_values_name_the_key(workdir: Path, change: dict[str, Any], expected: str) -> None:
    assert problems(base(**change), workdir) == [expected]


def test_missing_required_keys(workdir: Path) -> None:
    raw = base()
    del raw["name"], raw["target"]
    assert problems(raw, workdir) == ["name: required key is missing", "target: required key is missing"]


@pytest.mark.parametrize(("entry", "expected"), [
    ({"name": "x", "type": "float", "range": [1, 0]}, "parameter_config[0].range: the range [1, 0] is empty"),
    ({"name": "x", "type": "float", "range": [1, 1]}, "parameter_config[0].range: the range [1, 1] is empty"),
    ({"name": "x", "type": "int", "range": [0, 2.5]}, "parameter_config[0].range: expected two integers"),
    ({"name": "x", "type": "choice", "range": []}, "parameter_config[0].range: a choice needs a non-empty list"),
    ({"name": "x", "type": "float", "range": [0, 1], "log": True}, "parameter_config[0].range: a log-scaled"),
    ({"name": "x", "type": "float", "range": [0]}, "parameter_config[0].range: expected [min, max]"),
    ({"name": "x", "type": "text", "range": [0, 1]}, 'parameter_config[0].type: expected "float", "int" or "choice"'),
    ({"name": "tid", "range": [0, 1]}, "parameter_config[0].name: 'tid' is reserved"),
    ({"name": "x", "range": [0, 4], "n": 1}, "parameter_config[0].n: input should be greater than or equal to 2"),
])
def test_parameter_entries(workdir: Path, entry: dict[str, Any], expected: str) -> None:
    found = problems(base(parameter_config=[entry]), workdir)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_duplicate_parameter_names(workdir: Path) -> None:
    entry = {"name": "x", "type": "int", "range": [0, 3]}
    assert problems(base(parameter_config=[entry, entry]), workdir) == [
        "parameter_config: the name 'x' is used twice"]


def test_remote_resources_point_to_ray(workdir: Path) -> None:
    found = problems(base(resource="aws"), workdir)
    assert len(found) == 1 and found[0].startswith("resource: 'aws' (AWS instances) is not supported")
    assert "Ray" in found[0]


def test_scripts_are_checked(workdir: Path) -> None:
    assert problems(base(script="nope.py"), workdir) == [f"script: {workdir / 'nope.py'} does not exist"]
    (workdir / "run.sh").write_text("#!/bin/sh\n")
    assert problems(base(script="run.sh"), workdir) == [
        f"script: {workdir / 'run.sh'} is not executable (run chmod +x on it, or use a .py script)"]
    (workdir / "run.sh").chmod(0o755)
    assert validate_experiment(base(script="run.sh --fast"), "x", base_dir=workdir).command == [
        str(workdir / "run.sh"), "--fast"]
    assert problems(base(workingdir="missing"), workdir) == [f"workingdir: {workdir / 'missing'} is not a directory"]


def test_resolve_script_accepts_a_program_on_path(tmp_path: Path) -> None:
    tokens, problem = resolve_script("sh train.sh", tmp_path)
    assert problem is None and tokens[0].endswith("/sh") and tokens[1:] == ["train.sh"]


def test_all_problems_are_reported_at_once(workdir: Path) -> None:
    raw = base(n_parallel=0, script="nope.py", target="up", extra_key=1)
    assert len(problems(raw, workdir)) == 4


def test_load_experiment_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",}')
    with pytest.raises(ConfigError, match=r"bad.json: not valid JSON \(line 1"):
        load_experiment(bad)
    bad.write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_experiment(bad)


def test_compression_section_is_passed_through(workdir: Path) -> None:
    # issue 4 validates the section (names, schema); a valid one is kept exactly as given
    section = {"framework": "torch", "type": "pruning", "compressor": "l1_filter",
               "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}
    loaded = validate_experiment(base(compression=section), "x", base_dir=workdir)
    assert loaded.experiment.compression == section and loaded.raw["compression"] == section


def test_debug_shows_the_traceback(workdir: Path) -> None:
    from aup.cli import main

    path = workdir / "exp.json"
    path.write_text(json.dumps(base(n_parallel=0)))
    with pytest.raises(ConfigError, match="n_parallel"):
        main([str(path), "--debug", "--storage", f"sqlite:///{workdir / 'a.db'}"])
