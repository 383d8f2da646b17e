"""What a newcomer reads: strict ``--where``, per-layer bits as numbers, one number format in the
runner's lines, the failed trial's log path (``aup show`` and the end of a run), trial counts that
add up against the plan."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from aup.errors import UserError
from aup.runner.progress import failure_lines, number, print_summary
from aup.views import counts, query, tables
from aup.views.records import TrialRow, layer_columns
from aup.views.synthetic import make_store

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- --where
@pytest.mark.parametrize("text, field, op, value", [
    ("score>0.9", "score", ">", 0.9), ("score >= 0.9", "score", ">=", 0.9),
    ("sparsity (conv1)<0.5", "sparsity (conv1)", "<", 0.5), ("compressor=l1_filter", "compressor", "=", "l1_filter"),
    ("bits[conv1]!=8", "bits[conv1]", "!=", 8.0), ("log_path~trial_3", "log_path", "~", "trial_3"),
    ("score>-1", "score", ">", -1.0)])
def test_where_accepts_field_op_value(text: str, field: str, op: str, value: Any) -> None:
    condition = query.parse_where(text)
    assert (condition.field, condition.op, condition.value) == (field, op, value)


@pytest.mark.parametrize("text, says", [
    ("score>>0.9", "'>>' is not an operator"), ("score=<3", "'=<' is not an operator"),
    ("score>abc", "'>' compares numbers, got 'abc'"), ("score>", "no value after '>'"),
    (">0.9", "expected FIELD OP VALUE"), ("score", "expected FIELD OP VALUE")])
def test_where_refuses_anything_else_in_one_line(text: str, says: str) -> None:
    with pytest.raises(UserError) as caught:
        query.parse_where(text)
    message = str(caught.value)
    assert says in message and "\n" not in message and message.startswith(f"--where {text!r}")


def test_compare_with_a_bad_where_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aup.db'}"
    make_store(url, name="demo", n_trials=20)
    done = subprocess.run([sys.executable, "-m", "aup", "compare", "demo", "--where", "score>>0.9", "--storage", url],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "aup: error: --where 'score>>0.9': '>>' is not an operator; expected FIELD OP VALUE with OP one of "
        "> >= < <= = != ~ (e.g. 'score>0.95')"]


# ---------------------------------------------------------------------------------------------- bits
def test_layer_bits_are_numbers_not_dicts() -> None:
    assert layer_columns("bits", {"conv1": {"weight": 5}, "fc": {"weight": 8, "output": 6}, "x": 4}) == {
        "bits[conv1]": 5, "bits[fc]": 8, "bits[fc].output": 6, "bits[x]": 4}
    assert layer_columns("bits", {"relu": {"output": 8}}) == {"bits[relu]": 8}
    row = TrialRow(0, "COMPLETE", [0.9], {}, {"layer_bits": {"conv1": {"weight": 5}}}, objective_names=["score"]).flat()
    assert row["bits[conv1]"] == 5
    assert "5" == tables.cell("bits[conv1]", row, [])


# ---------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value, shown", [
    (91599, "91,599"), (121040.3, "121,040"), (1.2104e5, "121,040"), (0.74471, "0.74471"), (0.00140614, "0.00140614"), (0.000140614, "0.0001406"),
    (5.0, "5"), (0.99, "0.99"), (12.5, "12.5"), (3e-5, "3e-05"), ("fpgm", "fpgm"), (True, "True"),
    (float("nan"), "nan")])
def test_one_number_format(value: Any, shown: str) -> None:
    assert number(value) == shown


# ---------------------------------------------------------------------------------------------- counts
def test_counts_add_up_after_a_failure() -> None:
    trials = [("FAIL", {}), ("FAIL", {"interrupted": True}), ("WAITING", {"requeued_from": 1})]
    counted = counts.count(trials)
    assert counted.counted == 2
    assert counts.describe(counted, 2) == "2 trials of 2 planned: 1 failed, 1 interrupted (queued to resume)"
    assert counts.describe(counts.count([("COMPLETE", {})] * 3), 3) == "3 trials of 3 planned: 3 complete"
    sequence = counts.count([("COMPLETE", {}), ("FAIL", {"interrupted": True})])  # the grid re-proposes it itself
    assert counts.describe(sequence, 4) == "1 trial of 4 planned: 1 complete; 1 interrupted"
    assert counts.describe(counts.count([]), None) == "0 trials: none yet"


def _frozen(number: int, state: str, attrs: dict[str, Any], values: list[float] | None = None) -> Any:
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), user_attrs=attrs, values=values,
                           params={"lr": 0.01})


def test_end_of_run_names_the_failed_trials_logs_and_counts_that_add_up() -> None:
    trials = [_frozen(0, "FAIL", {"status_reason": "exit code 1: boom", "log_path": "/w/jobs/e-0.out"}),
              _frozen(1, "FAIL", {"status_reason": "interrupted", "interrupted": True, "log_path": "/w/jobs/e-1.out"}),
              _frozen(2, "WAITING", {})]
    assert failure_lines(trials) == ["trial 0 failed: exit code 1: boom; log: /w/jobs/e-0.out"]
    out = io.StringIO()
    print_summary(Console(file=out, width=200), study_name="e", status="failed", trials=trials, objectives=["score"],
                  storage_url="sqlite:///x.db", best=[], planned=2)
    text = out.getvalue()
    assert "e: failed (2 trials of 2 planned: 1 failed, 1 interrupted (queued to resume))" in text
    assert "log: /w/jobs/e-0.out" in text and "e-1.out" not in text
    many = [_frozen(n, "FAIL", {"status_reason": "x", "log_path": f"/l/{n}"}) for n in range(5)]
    assert failure_lines(many)[-1] == "... and 2 more failed trials (aup show lists them by reason)"


@pytest.mark.slow  # runs an experiment whose trials fail
def test_show_gives_the_log_of_each_failure_group(tmp_path: Path) -> None:
    from aup.views.records import open_store

    url = f"sqlite:///{tmp_path / 'aup.db'}"
    make_store(url, name="demo", n_trials=50)
    experiment, trials = open_store(url).load("demo")
    data = tables.show_data(experiment, trials)
    groups = {g["reason"]: g for g in data["failures"]}
    first_oom = min(t.number for t in trials if t.reason == "exit code 1: CUDA out of memory")
    assert groups["exit code 1: CUDA out of memory"]["log"] == f"/tmp/synthetic/jobs/{first_oom}.out"
    out = io.StringIO()
    console = Console(file=out, width=250)
    for part in tables.render_show(data, experiment, trials):
        console.print(part)
    text = out.getvalue()
    assert f"/tmp/synthetic/jobs/{first_oom}.out" in text
    assert "50 trials of 50 planned:" in text and "log of the first" in text


def test_list_does_not_count_a_queued_copy_as_a_run_trial(tmp_path: Path) -> None:
    import optuna

    from aup.views.records import open_store

    url = f"sqlite:///{tmp_path / 'aup.db'}"
    make_store(url, name="demo", n_trials=4, fail_every=0, prune_every=0)
    optuna.load_study(study_name="demo", storage=url).enqueue_trial({"lr": 0.01})  # what an interruption leaves
    (item,) = tables.list_data(open_store(url).experiments())
    assert (item["trials"], item["complete"], item["queued"], item["running"]) == (4, 4, 1, 0)
