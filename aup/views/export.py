"""``aup export``: one row per trial with every hyperparameter and metric, as CSV or JSON.

Columns are the union over all trials in a stable, readable order (trial, state, objectives,
metrics and their baseline ratios, hyperparameters, per-layer detail, bookkeeping), so a
spreadsheet or pandas gets the same header whatever order trials finished in. JSON uses ``null``
for missing and non-finite numbers, because ``NaN`` is not valid JSON.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from aup import metrics as M
from aup.numbers import finite_or_none
from aup.views.records import StudyRecord, TrialRow

TAIL = ("duration_s", "attempts", "status_reason", "log_path", "job_config_path", "budget", "grid_index")


def export_columns(experiment: StudyRecord, trials: Sequence[TrialRow], rows: Sequence[dict[str, Any]]) -> list[str]:
    from aup.views.tables import param_names

    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    params = param_names(trials)
    layers = [k for k in seen if k.startswith(("sparsity[", "bits["))]
    baselines = [k for k in seen if k.startswith(M.BASELINE_PREFIX)]
    head = ["number", "state", *experiment.objective_names]
    metrics = [k for k in seen if k not in head and k not in params and k not in layers and k not in baselines
               and k not in TAIL]
    ordered = head + metrics + params + layers + baselines + [k for k in TAIL if k in seen]
    return [k for k in dict.fromkeys(ordered) if k in seen]


def to_records(experiment: StudyRecord, trials: Sequence[TrialRow]) -> tuple[list[str], list[dict[str, Any]]]:
    rows = [trial.flat() for trial in trials]
    columns = export_columns(experiment, trials, rows)
    return columns, [{c: finite_or_none(row.get(c)) for c in columns} for row in rows]


def to_csv(columns: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in record.items()} for record in records)
    return buffer.getvalue()


def to_json(records: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(records), indent=1, allow_nan=False, default=str) + "\n"
