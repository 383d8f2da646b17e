"""A table of malformed experiments: each one is refused by ``aup run`` with exit status 2 and one
line ``aup: error: <file>: <key>: <what was expected>``, and nothing is written (no store, no job files).

The table covers the file itself (not JSON, duplicate keys, encoding), every top-level key, every
section, the bounds that keep an experiment finite (name length, grid size, budgets, trial counts)
and the sections validated by other layers (constraints, early stopping, proposer options,
compression). Each row names the text its line must contain.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

import pytest

from aup.cli import main

DELETE = object()


def base() -> dict[str, Any]:
    return {"name": "bad", "script": "train.py", "resource": "cpu", "proposer": "random", "target": "max",
            "n_samples": 2, "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}]}


def change(**overrides: Any) -> Callable[[], str]:
    def make() -> str:
        exp = base()
        for key, value in overrides.items():
            if value is DELETE:
                exp.pop(key, None)
            else:
                exp[key] = value
        return json.dumps(exp)
    return make


def param(**overrides: Any) -> Callable[[], str]:
    entry: dict[str, Any] = {"name": "x", "type": "float", "range": [0, 1]}
    for key, value in overrides.items():
        if value is DELETE:
            entry.pop(key, None)
        else:
            entry[key] = value
    return change(parameter_config=[entry])


def text(value: str) -> Callable[[], str]:
    return lambda: value


def section(name: str, **values: Any) -> Callable[[], str]:
    return change(**{name: values})


def early(**values: Any) -> Callable[[], str]:
    return change(resource_args={"early_stop": values})


HB = {"proposer": "hyperband", "n_samples": DELETE}
GRID = {"proposer": "sequence", "n_samples": DELETE}

CASES: list[tuple[str, Callable[[], str], str]] = [
    # the file
    ("not json", text("{"), "not valid JSON"),
    ("empty file", text(""), "not valid JSON"),
    ("trailing comma", text('{"name": "x",}'), "not valid JSON"),
    ("a list", text("[1, 2]"), "must be a JSON object, not list"),
    ("a string", text('"exp"'), "must be a JSON object, not str"),
    ("null", text("null"), "must be a JSON object, not NoneType"),
    ("duplicate top key", text('{"name": "a", "name": "b"}'), "name: the key appears twice"),
    ("duplicate nested key", text('{"name": "a", "runtime_args": {"timeout": 1, "timeout": 2}}'),
     "timeout: the key appears twice"),
    ("deep nesting", text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    # name
    ("name missing", change(name=DELETE), "name: required key is missing"),
    ("name empty", change(name=""), "name: must be a non-empty string"),
    ("name blank", change(name="   "), "name: must be a non-empty string"),
    ("name 5000 chars", change(name="n" * 5000), "name: expected at most 200 characters, got 5,000"),
    ("name NUL", change(name="a\x00b"), "name: control or invisible characters are not allowed (found U+0000)"),
    ("name escape code", change(name="a\x1b[2Jb"), "(found U+001B)"),
    ("name newline", change(name="a\nb"), "(found U+000A)"),
    ("name bidi override", change(name="a\u202eb"), "(found U+202E)"),
    ("name zero width", change(name="a\u200bb"), "(found U+200B)"),
    ("name number", change(name=5), "name: expected a string, got 5"),
    ("name list", change(name=["a"]), "name: expected a string"),
    # script
    ("script missing", change(script=DELETE), "script: required key is missing"),
    ("script empty", change(script=""), "script: expected the trial script to run, got an empty string"),
    ("script absent", change(script="nope.py"), "nope.py does not exist"),
    ("script a folder", change(script="folder"), "folder is not a file"),
    ("script not executable", change(script="data.txt"), "is not executable"),
    ("script bad quoting", change(script="'train.py"), "script: cannot split"),
    ("script number", change(script=3), "script: expected a string, got 3"),
    # resource
    ("resource missing", change(resource=DELETE), "resource: required key is missing"),
    ("resource unknown", change(resource="tpu"), 'resource: expected "cpu", "gpu" or "ray", got "tpu"'),
    ("resource node", change(resource="node"), "resource: 'node' (SSH nodes) is not supported by aup"),
    ("resource aws", change(resource="aws"), "resource: 'aws' (AWS instances) is not supported by aup"),
    ("resource passive", change(resource="passive"), "'passive' (passive (manual) trials) is not supported"),
    ("resource number", change(resource=1), "resource: expected"),
    # proposer
    ("proposer missing", change(proposer=DELETE), "proposer: required key is missing"),
    ("proposer unknown", change(proposer="foo"), "proposer: unknown proposer 'foo'"),
    ("proposer typo", change(proposer="rnadom"), "(did you mean 'random'?)"),
    ("proposer number", change(proposer=5), "proposer: expected a string, got 5"),
    ("proposer eas", change(proposer="eas"), "proposer"),
    # target
    ("target missing", change(target=DELETE), "target: required key is missing"),
    ("target word", change(target="maximize"), 'target: expected "max", "min" or an object'),
    ("target empty object", change(target={}), "target: expected 'max', 'min' or a non-empty"),
    ("target bad direction", change(target={"score": "up"}), "target.score"),
    ("target number", change(target=1), "target: expected"),
    # counts and seeds
    ("n_samples zero", change(n_samples=0), "n_samples: input should be greater than or equal to 1, got 0"),
    ("n_samples negative", change(n_samples=-5), "n_samples: input should be greater than or equal to 1"),
    ("n_samples float", change(n_samples=1.5), "n_samples: expected an integer, got 1.5"),
    ("n_samples string", change(n_samples="10"), 'n_samples: expected an integer, got "10"'),
    ("n_samples bool", change(n_samples=True), "n_samples: expected an integer, got true"),
    ("n_samples ten million", change(n_samples=10_000_000), "n_samples: input should be less than or equal to 1000000"),
    ("n_samples missing", change(n_samples=DELETE), "n_samples: required"),
    ("n_parallel zero", change(n_parallel=0), "n_parallel: input should be greater than or equal to 1"),
    ("n_parallel string", change(n_parallel="2"), "n_parallel: expected an integer"),
    ("random_seed string", change(random_seed="x"), "random_seed: expected an integer"),
    ("random_seed float", change(random_seed=1.5), "random_seed: expected an integer"),
    ("workingdir absent", change(workingdir="no/such/dir"), "workingdir: "),
    ("workingdir number", change(workingdir=5), "workingdir: expected a string"),
    ("cwd number", change(cwd=5), "cwd: expected a string"),
    # unknown keys
    ("unknown key typo", change(n_sample=3), "n_sample: unknown key (did you mean 'n_samples'?)"),
    ("unknown key", change(colour="red"), "colour: unknown key"),
    ("option of another proposer", change(max_iter=81), "max_iter: not an option of the 'random' proposer"),
    # parameter_config
    ("parameters not a list", change(parameter_config={"x": 1}), "parameter_config: expected a list"),
    ("parameter a number", change(parameter_config=[5]), "parameter_config[0]"),
    ("parameter name missing", param(name=DELETE), "parameter_config[0].name: required key is missing"),
    ("parameter name empty", param(name=""), "parameter_config[0].name: must be a non-empty string"),
    ("parameter name reserved", param(name="tid"), "'tid' is reserved for the runner's own job config keys"),
    ("parameter names twice", change(parameter_config=[{"name": "x", "type": "int", "range": [0, 3]}] * 2),
     "parameter_config: the name 'x' is used twice"),
    ("parameter type unknown", param(type="str"), 'parameter_config[0].type: expected "float", "int" or "choice"'),
    ("parameter range missing", param(range=DELETE), "parameter_config[0].range: required key is missing"),
    ("parameter range text", param(range="0-1"), "parameter_config[0].range: expected a list"),
    ("float range one value", param(range=[1]), "range: expected [min, max] for a float parameter, got [1]"),
    ("float range reversed", param(range=[1, 0]), "range: the range [1, 0] is empty (expected min < max)"),
    ("float range equal", param(range=[0, 0]), "range: the range [0, 0] is empty"),
    ("float range text", param(range=["a", 1]), "range: expected two finite numbers"),
    ("float range nan", text('{"name": "bad", "script": "train.py", "resource": "cpu", "proposer": "random",'
                             ' "target": "max", "n_samples": 2, "parameter_config": [{"name": "x", "type": "float",'
                             ' "range": [0, NaN]}]}'), "range: expected two finite numbers"),
    ("float range infinite", text('{"name": "bad", "script": "train.py", "resource": "cpu", "proposer": "random",'
                                  ' "target": "max", "n_samples": 2, "parameter_config": [{"name": "x",'
                                  ' "type": "float", "range": [0, Infinity]}]}'), "range: expected two finite numbers"),
    ("float range bool", param(range=[False, 1]), "range: expected two finite numbers"),
    ("int range fractional", param(type="int", range=[0.5, 3]), "range: expected two integers for an int parameter"),
    ("int range reversed", param(type="int", range=[3, 0]), "range: the range [3, 0] is empty"),
    ("choice range empty", param(type="choice", range=[]), "range: a choice needs a non-empty list of values"),
    ("log range from zero", param(range=[0, 1], log=True), "range: a log-scaled range must be positive"),
    ("log choice", param(type="choice", range=[1, 2], log=True), "log: only float and int parameters"),
    ("log not bool", param(log="yes"), "parameter_config[0].log: expected true or false"),
    ("interval zero", param(interval=0), "interval: expected a positive step, got 0"),
    ("interval negative", param(interval=-1), "interval: expected a positive step, got -1"),
    ("interval text", param(interval="0.1"), "parameter_config[0].interval"),
    ("n one", param(n=1), "parameter_config[0].n: input should be greater than or equal to 2"),
    ("n text", param(n="3"), "parameter_config[0].n: expected an integer"),
    ("parameter key typo", param(rnage=[0, 1]), "rnage: unknown key (did you mean 'range'?)"),
    ("condition not a pair", param(condition=5), "parameter_config[0].condition"),
    ("condition on itself", change(parameter_config=[{"name": "x", "type": "float", "range": [0, 1],
                                                      "condition": ["y", 1]}]), "condition"),
    # bounds that keep a run finite
    ("grid of a billion floats", change(**GRID, parameter_config=[{"name": "x", "type": "float", "range": [0, 1],
                                                                  "interval": 1e-9}]),
     "parameter_config: the grid has up to 1,000,000,001 points"),
    ("grid of a billion ints", change(**GRID, parameter_config=[{"name": "x", "type": "int",
                                                                "range": [0, 1_000_000_000]}]),
     "parameter_config: the grid has up to 1,000,000,001 points"),
    ("grid of three dimensions", change(**GRID, parameter_config=[
        {"name": f"p{i}", "type": "int", "range": [1, 100]} for i in range(3)]),
     "the grid has up to 1,000,000 points (p0: 100 x p1: 100 x p2: 100)"),
    ("hyperband max_iter 1e12", change(**HB, max_iter=1e12), "max_iter: expected at most 100,000"),
    ("hyperband max_iter zero", change(**HB, max_iter=0), "max_iter"),
    ("hyperband max_iter text", change(**HB, max_iter="81"), "max_iter"),
    ("hyperband eta one", change(**HB, eta=1), "eta"),
    ("hyperband with two objectives", change(**HB, target={"score": "max", "model_bytes": "min"}),
     "single objective"),
    # runtime_args
    ("runtime_args a list", change(runtime_args=[1]), "runtime_args: expected an object"),
    ("timeout zero", section("runtime_args", timeout=0), "runtime_args.timeout: input should be greater than 0"),
    ("timeout text", section("runtime_args", timeout="10"), "runtime_args.timeout"),
    ("env value number", section("runtime_args", env={"A": 1}), "runtime_args.env.A: expected a string, got 1"),
    ("env a list", section("runtime_args", env=["A=1"]), "runtime_args.env: expected an object"),
    ("log limit zero", section("runtime_args", log_limit_mb=0), "runtime_args.log_limit_mb: input should be greater"),
    ("prune flag text", section("runtime_args", prune_job_files="yes"), "runtime_args.prune_job_files: expected true"),
    ("runtime key typo", section("runtime_args", timout=3), "runtime_args.timout: unknown key (did you mean 'timeout'?)"),
    # resource_args
    ("save_model text", section("resource_args", save_model="yes"), "resource_args.save_model: expected true or false"),
    ("labels twice", section("resource_args", multi_res_labels=["a", "a"]), "labels must be unique"),
    ("label reserved", section("resource_args", multi_res_labels=["score"]), "'score' is a name the runner records"),
    ("labels text", section("resource_args", multi_res_labels="a"), "resource_args.multi_res_labels: expected a list"),
    ("gpus empty", section("resource_args", gpus=[]), "resource_args.gpus: expected at least one device id"),
    ("resource key typo", section("resource_args", save_models=True), "(did you mean 'save_model'?)"),
    ("early_stop without policy", early(), "early_stop needs 'aup_policy'"),
    ("early_stop unknown policy", early(aup_policy="foo"), "early_stop.aup_policy"),
    ("early_stop curve fitting", early(aup_policy="curve_fitting"), "'curve_fitting' is not supported"),
    ("early_stop steps zero", early(aup_policy="median", aup_policy_steps=0), "early_stop.aup_policy_steps"),
    ("early_stop bandit factor", early(aup_policy="bandit", aup_policy_steps=1, bandit_factor=2),
     "early_stop.bandit_factor: expected a factor in (0, 1], got 2"),
    ("early_stop with two objectives", change(target={"score": "max", "model_bytes": "min"},
                                              resource_args={"early_stop": {"aup_policy": "median",
                                                                            "aup_policy_steps": 1}}),
     "'median' compares one objective; with 2 objectives use 'successive_halving'"),
    # job_failure
    ("retries negative", section("job_failure", job_retries=-1), "job_failure.job_retries: input should be greater"),
    ("ignore_fail text", section("job_failure", ignore_fail="no"), "job_failure.ignore_fail: expected true or false"),
    ("job_failure typo", section("job_failure", retries=2), "job_failure.retries: unknown key"),
    # constraints
    ("constraints a list", change(constraints=["score"]), "constraints"),
    ("constraint equality", change(constraints={"score": "== 1"}), "constraints.score: expected a condition starting"),
    ("constraint code", change(constraints={"score": ">= __import__('os')"}),
     "constraints.score: only numbers, metric names"),
    ("constraint bounds typo", change(constraints={"model_bytes": {"mid": 1}}), "constraints.model_bytes: expected"),
    ("constraint unreadable", change(constraints={"score": ">= (("}), "constraints.score: cannot read the expression"),
    ("constraint bool", change(constraints={"score": True}), "constraints"),
    # compression
    ("compression a number", change(compression=5), "compression"),
    ("compression unknown compressor", change(compression={"compressor": "nosuch", "config_list": []}),
     "compression"),
    ("one-time compression with n_samples", change(proposer=DELETE, parameter_config=[], n_samples=3, compression={
        "compression_framework": "torch", "compression_type": "pruning", "compressor": "level",
        "config_list": [{"sparsity": 0.5, "op_types": ["default"]}]}), "runs exactly one trial"),
    ("allocation unknown method", change(compression={
        "compressor": "l1_filter", "allocation": "greedy",
        "config_list": [{"sparsity": {"type": "float", "range": [0.2, 0.8]}, "op_types": ["Conv2d"]}]}),
     "compression.allocation.method: expected one of sensitivity, uniform, got 'greedy'"),
    ("allocation range above the cap", change(compression={
        "compressor": "l1_filter", "allocation": {"method": "sensitivity", "max_sparsity": 0.6},
        "config_list": [{"sparsity": {"type": "float", "range": [0.2, 0.8]}, "op_types": ["Conv2d"]}]}),
     "goes above the allocation's max_sparsity 0.6"),
    ("allocation seeds with hyperband", change(proposer="hyperband", compression={
        "compressor": "l1_filter", "allocation": {"method": "sensitivity", "mode": "seed"},
        "config_list": [{"sparsity": {"type": "float", "range": [0.2, 0.8]}, "op_names": ["conv1", "conv2"]}]}),
     "compression.allocation.mode: \"seed\" queues trials for a sampler"),
    # target mode
    ("stop unknown rule", change(stop="first"), "stop: expected \"budget\" or \"first_feasible\""),
    ("stop first_feasible without constraints", change(stop="first_feasible"), "stop: \"first_feasible\" stops"),
    ("recommend not an objective", change(recommend="latency_ms"), "recommend: expected one of the objectives"),
]


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "train.py").write_text("import aup\naup.print_result(1.0)\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "data.txt").write_text("not a script\n")
    os.chmod(tmp_path / "data.txt", stat.S_IRUSR | stat.S_IWUSR)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUP_STORAGE", raising=False)
    return tmp_path


def test_the_table_has_at_least_a_hundred_distinct_cases() -> None:
    assert len(CASES) >= 100
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(("label", "make", "expected"), CASES, ids=[case[0] for case in CASES])
def test_malformed_experiment_is_one_line_exit_2_and_writes_nothing(
        label: str, make: Callable[[], str], expected: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "exp.json"
    content = make()
    path.write_text(content, encoding="utf-8")
    before = sorted(p.name for p in folder.iterdir())
    code = main(["run", str(path), "--no-live"])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, (label, err)
    assert len(lines) == 1, (label, lines)
    assert lines[0].startswith(f"aup: error: {path}: "), lines[0]
    assert expected in lines[0], (label, lines[0])
    assert sorted(p.name for p in folder.iterdir()) == before  # no .aup/, no jobs/, no aup_models/


def test_invalid_utf8_is_one_line(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "exp.json"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    assert main(["run", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "not valid UTF-8" in lines[0]
