"""The compression section -> search dimensions and concrete job configs (torch-free translator)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from aup.compression.search_space import CompressionJobConfigBuilder, CompressionSpaceError, check_compression
from aup.config import validate_experiment
from aup.errors import ConfigError

optuna.logging.set_verbosity(optuna.logging.WARNING)
R = {"type": "float", "range": [0.1, 0.9]}


def fpgm(**entry: Any) -> dict[str, Any]:
    return {"framework": "torch", "type": "pruning", "compressor": "fpgm",
            "config_list": [{"sparsity": dict(R), "op_names": ["conv1", "conv2"], "op_types": ["Conv2d"], **entry}]}


def test_op_names_expand_to_one_dimension_per_layer_with_dashboard_names() -> None:
    builder = CompressionJobConfigBuilder(fpgm())
    assert builder.space.names == ["sparsity (conv1)", "sparsity (conv2)"]
    job = builder.build({"sparsity (conv1)": 0.3, "sparsity (conv2)": 0.6})
    assert job == {"compression_framework": "torch", "compression_type": "pruning", "compressor": "fpgm",
                   "config_list": [{"sparsity": 0.3, "op_names": ["conv1"], "op_types": ["Conv2d"]},
                                   {"sparsity": 0.6, "op_names": ["conv2"], "op_types": ["Conv2d"]}]}


def test_expand_false_keeps_one_shared_value_and_drops_the_flag() -> None:
    builder = CompressionJobConfigBuilder(fpgm(expand_op_names=False))
    assert builder.space.names == ["sparsity (conv1, conv2)"]
    entry = builder.build({"sparsity (conv1, conv2)": 0.4})["config_list"]
    assert entry == [{"sparsity": 0.4, "op_names": ["conv1", "conv2"], "op_types": ["Conv2d"]}]


def test_nested_quant_bits_and_op_types_label_and_type_lookup() -> None:
    section = {"compressor": "qat", "config_list": [
        {"quant_types": ["weight"], "quant_bits": {"weight": {"type": "int", "range": [2, 8]}},
         "op_types": ["Conv2d", "Linear"]}]}
    builder = CompressionJobConfigBuilder(section)
    assert builder.space.names == ["quant_bits.weight (Conv2d, Linear)"]
    job = builder.build({"quant_bits.weight (Conv2d, Linear)": 3})
    assert job["compression_type"] == "quantization"  # type omitted: unique name
    assert job["config_list"][0]["quant_bits"] == {"weight": 3}


def test_names_are_unique_and_stable() -> None:
    section = {"compressor": "level", "config_list": [
        {"sparsity": dict(R), "op_types": ["Conv2d"]}, {"sparsity": dict(R), "op_types": ["Conv2d"]}]}
    names = CompressionJobConfigBuilder(section).space.names
    assert names == ["sparsity (Conv2d)", "sparsity (Conv2d) #2"]
    assert CompressionJobConfigBuilder(json.loads(json.dumps(section))).space.names == names
    clash = CompressionJobConfigBuilder(fpgm(), [{"name": "sparsity (conv1)", "type": "float", "range": [0, 1]}])
    assert clash.space.names == ["sparsity (conv1)", "sparsity (conv1) #2", "sparsity (conv2)"]


def test_pruner_choice_is_a_conditional_space() -> None:
    section = {"compressor": {"type": "choice", "range": ["l1_filter", "fpgm", "taylor_fo_weight_filter"]},
               "config_list": {"l1_filter": [{"sparsity": dict(R), "op_types": ["Conv2d"]}],
                               "fpgm": [{"sparsity": 0.5, "op_types": ["Conv2d"]}],
                               "taylor_fo_weight_filter": [{"sparsity": dict(R), "op_types": ["Conv2d"]}]},
               "compressor_args": {"taylor_fo_weight_filter": {"statistics_batch_num": {"type": "int", "range": [1, 4]}}}}
    builder = CompressionJobConfigBuilder(section)
    dims = {d.name: d.condition for d in builder.space}
    assert dims == {"compressor": None,
                    "sparsity (Conv2d) [l1_filter]": ("compressor", "l1_filter"),
                    "sparsity (Conv2d) [taylor_fo_weight_filter]": ("compressor", "taylor_fo_weight_filter"),
                    "statistics_batch_num [taylor_fo_weight_filter]": ("compressor", "taylor_fo_weight_filter")}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        params = builder.space.suggest(trial)
        job = builder.build(params)
        seen.add(job["compressor"])
        if job["compressor"] == "taylor_fo_weight_filter":
            assert set(params) == {"compressor", "sparsity (Conv2d) [taylor_fo_weight_filter]",
                                   "statistics_batch_num [taylor_fo_weight_filter]"}
            assert 1 <= job["compressor_args"]["statistics_batch_num"] <= 4
        else:
            assert "compressor_args" not in job
            assert not any("taylor" in k for k in params)
        if job["compressor"] == "fpgm":
            assert job["config_list"] == [{"sparsity": 0.5, "op_types": ["Conv2d"]}]
        study.tell(trial, 0.0)
    assert seen == {"l1_filter", "fpgm", "taylor_fo_weight_filter"}
    grid = builder.space.grid()  # conditional dims multiply only their branch
    assert len({p["compressor"] for p in grid}) == 3


def test_pipeline_stages_names_and_job_config() -> None:
    section = [fpgm(), {"compressor": {"type": "choice", "range": ["qat", "dorefa"]}, "config_list": [
        {"quant_types": ["weight"], "quant_bits": {"type": "int", "range": [2, 8]}, "op_names": ["conv1"]}]}]
    builder = CompressionJobConfigBuilder(section)
    assert builder.space.names == ["sparsity (conv1)", "sparsity (conv2)", "compressor (stage 2)",
                                   "quant_bits (conv1)"]
    job = builder.build({"sparsity (conv1)": 0.2, "sparsity (conv2)": 0.3, "compressor (stage 2)": "dorefa",
                         "quant_bits (conv1)": 4})
    assert [s["compressor"] for s in job["compression_pipeline"]] == ["fpgm", "dorefa"]
    assert job["compression_pipeline"][1]["config_list"][0]["quant_bits"] == 4
    same = [fpgm(), fpgm()]
    assert CompressionJobConfigBuilder(same).space.names == [
        "sparsity (conv1)", "sparsity (conv2)", "sparsity (conv1) @stage2", "sparsity (conv2) @stage2"]


def test_job_configs_never_alias_each_other_or_the_section() -> None:
    section = fpgm(expand_op_names=False)
    original = copy.deepcopy(section)
    builder = CompressionJobConfigBuilder(section)
    first = builder.build({"sparsity (conv1, conv2)": 0.2})
    second = builder.build({"sparsity (conv1, conv2)": 0.7})
    assert first["config_list"][0]["sparsity"] == 0.2 and second["config_list"][0]["sparsity"] == 0.7
    first["config_list"][0]["op_names"].append("fc1")
    assert second["config_list"][0]["op_names"] == ["conv1", "conv2"]
    assert section == original


def test_one_time_mode_has_no_dimensions() -> None:
    builder = CompressionJobConfigBuilder({"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]})
    assert builder.one_time and len(builder.space) == 0
    assert builder.build({})["config_list"] == [{"sparsity": 0.5, "op_types": ["Conv2d"]}]


@pytest.mark.parametrize("section, message", [
    (fpgm(sparsity={"type": "float", "range": [0.1, 1.0]}),
     "compression.config_list[0].sparsity: range [0.1, 1.0] reaches 1.0: expected a number in (0, 1), got 1.0"),
    ({"compressor": "qat", "config_list": [{"quant_types": ["weight"], "op_types": ["Conv2d"],
                                            "quant_bits": {"weight": {"type": "int", "range": [2, 40]}}}]},
     "compression.config_list[0].quant_bits.weight: range [2, 40] reaches 40:"),
    ({"compressor": "l1_filtr", "config_list": []}, "compression.compressor: unknown compressor 'l1_filtr' for torch "
     "(did you mean 'l1_filter'?)"),
    ({"type": "quantization", "compressor": "fpgm", "config_list": []}, "compression.compressor: unknown compressor 'fpgm' "
     "for torch quantization"),
    ({"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"], "expand_op_names": False}]},
     "compression: \"expand_op_names\" only applies to automatic search"),
    (fpgm(sparsity={"type": "float", "range": [0.9, 0.1]}), "compression.config_list[0].sparsity: the range [0.9, 0.1] is empty"),
    (fpgm(sparsity={"type": "flot", "range": [0.1, 0.5]}), "compression.config_list[0].sparsity: a search range needs \"type\""),
    (fpgm(sparsity={"type": "float", "rang": [0.1, 0.5]}), "compression.config_list[0].sparsity: unknown key 'rang'"),
    ({"compressor": "fpgm", "config_list": [{"sparsity": 0.5, "op_types": ["Linear"]}]},
     "compression.config_list[0].op_types: 'fpgm' can only prune Conv2d layers"),
    ({"compressor": {"type": "choice", "range": ["fpgm", "level"]}, "config_list": {"fpgm": []}},
     "compression.config_list: no config_list for the compressor 'level'"),
])
def test_problems_are_one_line_each(section: dict[str, Any], message: str) -> None:
    problems = check_compression(section)
    assert any(p.startswith(message) for p in problems), problems
    assert all("\n" not in p for p in problems)
    with pytest.raises(CompressionSpaceError):
        CompressionJobConfigBuilder(section)


def test_config_validation_reports_every_problem_and_the_one_time_defaults(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("")
    raw = {"name": "e", "script": "t.py", "resource": "cpu",
           "compression": [fpgm(sparsity={"type": "float", "range": [0.0, 0.5]}),
                           {"compressor": "qat", "config_list": [{"quant_bits": 8, "op_types": ["Conv2d"]}]}]}
    with pytest.raises(ConfigError) as info:
        validate_experiment(raw, "x.json", base_dir=tmp_path)
    lines = str(info.value).splitlines()
    assert "x.json: proposer: required key is missing" in lines
    assert any(line.startswith("x.json: compression[0].config_list[0].sparsity: range [0.0, 0.5] reaches 0.0")
               for line in lines)
    assert any(line.startswith("x.json: compression[1].config_list[0].quant_types: required") for line in lines)
    one_time = {"name": "e", "script": "t.py", "resource": "cpu",
                "compression": {"compressor": "l1_filter", "config_list": [{"sparsity": 0.5, "op_types": ["Conv2d"]}]}}
    exp = validate_experiment(one_time, "x.json", base_dir=tmp_path).experiment
    assert (exp.proposer, exp.n_samples, exp.target) == ("random", 1, "max")
    bad = {**one_time, "constraints": {"model_bytes": "<= __import__('os')"}}
    with pytest.raises(ConfigError, match="constraints.model_bytes: only numbers"):
        validate_experiment(bad, "x.json", base_dir=tmp_path)


def test_constraint_values() -> None:
    from aup.constraints import INFEASIBLE, constraint_values, parse_constraints

    cons = parse_constraints({"score": ">= baseline_score - 0.01", "model_bytes": "<= 0.25 * baseline_model_bytes",
                              "param_count": 1000, "latency_ms": {"max": 2}})
    values = constraint_values(cons, {"score": 0.95, "baseline_score": 0.97, "model_bytes": 100,
                                      "baseline_model_bytes": 1000, "param_count": 900, "latency_ms": 3})
    assert values["score"] == pytest.approx(0.01 / 0.96)  # 0.96 - 0.95: one point, relative to the bound
    assert values["model_bytes"] == pytest.approx(-150 / 250)
    assert values["param_count"] == pytest.approx(-0.1) and values["latency_ms max"] == pytest.approx(0.5)
    assert constraint_values(cons, {"score": 0.9})["model_bytes"] == INFEASIBLE
