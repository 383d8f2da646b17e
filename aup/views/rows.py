"""The views' record model: one trial as a :class:`TrialRow`, one experiment as a :class:`StudyRecord`.

A :class:`TrialRow` keeps Optuna's namespaces apart (values, params, user attributes) and offers a
flat view (:meth:`TrialRow.flat`) where every hyperparameter and metric is one column, with the
derived columns users compare on: ``<metric>_ratio`` (to the uncompressed baseline the compressor
recorded as ``baseline_<metric>``) and ``sparsity[<layer>]`` / ``bits[<layer>]``.  Both readers
(:mod:`aup.views.sql_reader` and Optuna's API in :mod:`aup.views.records`) build these.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from aup import metrics as M
from aup.numbers import is_finite_number

__all__ = ["STATES", "RATIO_METRICS", "LAYER_PREFIXES", "NON_METRIC_ATTRS", "METRIC_NAMES_KEY", "RESERVED_COLUMNS",
           "TrialRow", "StudyRecord", "param_key", "objective_names_for"]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
RATIO_METRICS = M.ratio_metrics()  # the built-in rows' (flat() asks the registry, which may have grown)
LAYER_PREFIXES = {M.LAYER_SPARSITY: "sparsity", M.LAYER_BITS: "bits"}
# Bookkeeping attributes that are not metrics: kept out of the flat row (job_config repeats the params).
NON_METRIC_ATTRS = frozenset({"job_config"})
METRIC_NAMES_KEY = "study:metric_names"  # where optuna's ``study.set_metric_names`` keeps objective names
# the built-in metrics and the row's own columns (param_key also asks the registry, which may have grown)
RESERVED_COLUMNS = frozenset({*M.names(), "number", "state", "duration_s"})


@dataclass
class TrialRow:
    """One trial, as stored: objective values, hyperparameters and user attributes."""

    number: int
    state: str
    values: list[float] | None
    params: dict[str, Any]
    attrs: dict[str, Any]
    started: datetime | None = None
    completed: datetime | None = None
    objective_names: Sequence[str] = ("value",)
    constraints: dict[str, float] = field(default_factory=dict)  # optuna's constraint values (feasible when <= 0)

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.completed is None:
            return None
        return (self.completed - self.started).total_seconds()

    @property
    def reason(self) -> str | None:
        reason = self.attrs.get("status_reason")
        return str(reason) if reason not in (None, "") else None

    def flat(self) -> dict[str, Any]:
        """Every field of the trial as one flat ``{column: scalar}`` dict (the unit of all views)."""
        row: dict[str, Any] = {"number": self.number, "state": self.state}
        for key, value in self.attrs.items():
            if key in LAYER_PREFIXES and isinstance(value, dict):
                row.update(layer_columns(LAYER_PREFIXES[key], value))
            elif key not in NON_METRIC_ATTRS and not isinstance(value, (dict, list)):
                row[key] = value
        for index, name in enumerate(self.objective_names):
            value = self.values[index] if self.values and index < len(self.values) else None
            if value is not None or name not in row:
                row[name] = value
        if "budget" in self.attrs:  # hyperband/bohb: what the trial got, under the job config's name
            row["n_iterations"] = self.attrs["budget"]
        if self.constraints:  # the front's feasibility (aup.views.pareto) reads these two columns
            from aup.views.pareto import violation

            row["violation"] = violation(self.constraints)
            row.setdefault("feasible", row["violation"] <= 0)
        for metric in M.ratio_metrics():
            ratio = _ratio(row.get(metric), self.attrs.get(M.BASELINE_PREFIX + metric))
            if ratio is not None and metric + M.RATIO_SUFFIX not in row:  # a ratio measured side by side wins
                row[metric + M.RATIO_SUFFIX] = ratio
        for name, value in self.params.items():
            row[param_key(name, self.objective_names) if name not in row else f"param:{name}"] = value
        row["duration_s"] = self.duration_s
        return row


def layer_columns(prefix: str, per_layer: dict[str, Any]) -> dict[str, Any]:
    """``{layer: value}`` -> ``{"prefix[layer]": number}``.

    The quantizers record ``layer_bits`` as ``{layer: {"weight": 8, "output": 8}}``: the weight
    bits become ``bits[layer]`` and any other quantized tensor ``bits[layer].output``, so that every
    cell is a number (never a dict shown as ``{'weight': 5}``).
    """
    columns: dict[str, Any] = {}
    for layer, value in per_layer.items():
        if not isinstance(value, dict):
            columns[f"{prefix}[{layer}]"] = value
            continue
        for kind, number in value.items():
            column = f"{prefix}[{layer}]" if kind == "weight" or len(value) == 1 else f"{prefix}[{layer}].{kind}"
            columns[column] = number
    return columns


def param_key(name: str, objective_names: Sequence[str] = ()) -> str:
    """The flat-row column of hyperparameter ``name``: ``param:NAME`` when a metric can have that name.

    The rule depends on the name only (not on what one trial recorded), so a hyperparameter called
    ``sparsity`` is ``param:sparsity`` in every row, failed trials included.
    """
    reserved = RESERVED_COLUMNS.union(objective_names)
    return f"param:{name}" if name in reserved or M.get(name) is not None else name


def _ratio(value: Any, baseline: Any) -> float | None:
    if not is_finite_number(value) or not is_finite_number(baseline) or baseline == 0:
        return None
    return float(value) / float(baseline)


@dataclass
class StudyRecord:
    """One experiment (an Optuna study) with its study-level facts."""

    name: str
    study_id: int
    directions: list[str]  # "maximize" / "minimize" per objective
    objective_names: list[str]
    user_attrs: dict[str, Any]
    counts: Counter = field(default_factory=Counter)
    storage_url: str = ""
    trial_started: datetime | None = None
    trial_ended: datetime | None = None
    best_trials: list[int] = field(default_factory=list)  # best trial, or the Pareto front of the objectives
    best_values: list[list[float]] = field(default_factory=list)  # their objective values, same order

    def set_best(self, completed: Sequence[tuple[int, Sequence[float | None]]],
                 violations: dict[int, float] | None = None) -> None:
        """Best trial (one objective) or the front of the objectives (several) among completed trials,
        feasible first (``violations``: trial number -> total constraint violation, see aup.views.pareto)."""
        from aup.views.pareto import constrained_front

        signs = [-1.0 if d == "maximize" else 1.0 for d in self.directions]
        usable = [(n, [float(x) for x in v if x is not None]) for n, v in completed
                  if len(v) == len(signs) and all(x is not None and not math.isnan(x) for x in v)]
        points = [[x * s for x, s in zip(v, signs)] for _, v in usable]
        front = constrained_front(points, [(violations or {}).get(n, 0.0) for n, _ in usable])
        if len(signs) == 1:
            front = sorted(front, key=lambda i: (points[i][0], usable[i][0]))[:1]  # Optuna's best_trial
        keep = sorted(front, key=lambda i: (points[i][0], usable[i][0]))
        self.best_trials = [usable[i][0] for i in keep]
        self.best_values = [usable[i][1] for i in keep]

    @property
    def config(self) -> dict[str, Any]:
        config = self.user_attrs.get("experiment")
        return config if isinstance(config, dict) else {}

    @property
    def status(self) -> str:
        status = self.user_attrs.get("status")
        if status:
            return str(status)
        return "running" if self.counts.get("RUNNING") else "unknown"

    @property
    def started(self) -> str | None:
        return self.user_attrs.get("started") or _iso(self.trial_started)

    @property
    def ended(self) -> str | None:
        return self.user_attrs.get("ended") or (None if self.status == "running" else _iso(self.trial_ended))

    @property
    def n_trials(self) -> int:
        return sum(self.counts.values())

    @property
    def n_samples(self) -> int | None:
        value = self.config.get("n_samples")
        return int(value) if isinstance(value, (int, float)) else None

    def objective_directions(self) -> dict[str, str]:
        return dict(zip(self.objective_names, self.directions))


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc).astimezone().isoformat(timespec="seconds")


def objective_names_for(directions: Sequence[str], user_attrs: dict[str, Any], system_names: Any) -> list[str]:
    """Names of the objectives: optuna's metric names, else the experiment's ``target`` keys, else value_i."""
    n = len(directions)
    if isinstance(system_names, list) and len(system_names) == n and all(isinstance(s, str) for s in system_names):
        return list(system_names)
    target = (user_attrs.get("experiment") or {}).get("target") if isinstance(user_attrs.get("experiment"), dict) else None
    if isinstance(target, dict) and len(target) == n:
        return [str(key) for key in target]
    if isinstance(target, str) and n == 1:
        return [M.SCORE]
    return ["value"] if n == 1 else [f"value_{i}" for i in range(n)]
