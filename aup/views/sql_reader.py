"""The views' fast reader: Optuna's tables read with a handful of bulk SQL queries.

Why not ``study.get_trials()``: building 1,000 ``FrozenTrial`` objects through Optuna's ORM costs
about 0.8 s on SQLite, on top of ~0.35 s for opening an ``RDBStorage`` (ORM import and schema
check), which alone breaks the 1 s budget of ``aup list`` / ``aup compare``.  So this module reads
``studies``, ``trials``, ``trial_params``, ``trial_values``, ``trial_user_attributes``... directly
(stdlib ``sqlite3`` for SQLite files, SQLAlchemy for other databases) and builds the same rows as
Optuna's API would (a test checks it).
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from aup.safe_text import shown_url
from aup.views.rows import METRIC_NAMES_KEY, StudyRecord, TrialRow, objective_names_for

if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["REQUIRED_TABLES", "SqliteReader", "SqlAlchemyReader", "sqlite_path", "sql_experiments", "sql_load"]


REQUIRED_TABLES = frozenset({"studies", "trials", "trial_values", "trial_params", "trial_user_attributes"})


class SqliteReader:
    """Stdlib sqlite3, opened read-write-but-never-create: importing SQLAlchemy alone costs ~0.3 s."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> "SqliteReader":
        from urllib.parse import quote

        uri = f"file:{quote(str(Path(self.path).expanduser().resolve()))}?mode=rw"
        self.connection = sqlite3.connect(uri, uri=True, timeout=30)  # the runner may hold the lock briefly
        return self

    def __exit__(self, *exc: Any) -> None:
        self.connection.close()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.connection.execute(sql, params or {}).fetchall()

    def tables(self) -> set[str]:
        return {row[0] for row in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")}


class SqlAlchemyReader:
    """Any other SQLAlchemy URL (PostgreSQL, MySQL...)."""

    def __init__(self, engine: "sqlalchemy.engine.Engine") -> None:
        self.engine = engine

    def __enter__(self) -> "SqlAlchemyReader":
        self.connection = self.engine.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.connection.close()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        return [tuple(row) for row in self.connection.execute(text(sql), params or {}).all()]

    def tables(self) -> set[str]:
        import sqlalchemy

        return set(sqlalchemy.inspect(self.connection).get_table_names())


def sqlite_path(url: str) -> str | None:
    """The file of a plain ``sqlite:///PATH`` URL; None for memory, URI or parameterised URLs."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url[len("sqlite:///"):]
    return None if path in ("", ":memory:") or path.startswith("file:") else path


def sql_experiments(reader: Any, url: str) -> list[StudyRecord]:
    studies = reader.query("SELECT study_id, study_name FROM studies ORDER BY study_id")
    directions = reader.query("SELECT study_id, objective, direction FROM study_directions")
    attrs = reader.query("SELECT study_id, key, value_json FROM study_user_attributes")
    names = reader.query("SELECT study_id, value_json FROM study_system_attributes WHERE key = :k",
                         {"k": METRIC_NAMES_KEY})
    counts = reader.query("SELECT study_id, state, COUNT(*), MIN(datetime_start), MAX(datetime_complete) "
                          "FROM trials GROUP BY study_id, state")
    values = reader.query("SELECT t.study_id, t.number, v.objective, v.value, v.value_type FROM trial_values v "
                          "JOIN trials t ON t.trial_id = v.trial_id WHERE t.state = 'COMPLETE'")
    experiments = _assemble_experiments(studies, directions, attrs, names, counts, url)
    completed: dict[int, dict[int, dict[int, float | None]]] = {}
    for sid, number, objective, value, value_type in values:
        completed.setdefault(sid, {}).setdefault(number, {})[objective] = _stored_value(value, value_type)
    constraints: dict[int, dict[int, dict[str, float]]] = {}
    for sid, number, key, value_json in _constraint_rows(reader, "AND t.state = 'COMPLETE'", {}):
        _add_constraint(constraints.setdefault(sid, {}).setdefault(number, {}), key, value_json)
    from aup.views.pareto import violation

    for experiment in experiments:
        by_number = completed.get(experiment.study_id, {})
        experiment.set_best([(n, [v.get(i) for i in range(len(experiment.directions))])
                             for n, v in sorted(by_number.items())],
                            {n: violation(c) for n, c in constraints.get(experiment.study_id, {}).items()})
    return experiments


def _constraint_rows(reader: Any, where: str, bind: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(study_id, number, key, value_json) of optuna's constraint values (trial system attributes)."""
    if "trial_system_attributes" not in reader.tables():
        return []
    return reader.query("SELECT t.study_id, t.number, s.key, s.value_json FROM trial_system_attributes s "
                        "JOIN trials t ON t.trial_id = s.trial_id "
                        f"WHERE (s.key = 'constraints' OR s.key LIKE 'constraints:%') {where}", bind)


def _add_constraint(into: dict[str, float], key: str, value_json: Any) -> None:
    """Optuna keeps ``constraints:NAME`` per value (optuna 5) or one ``constraints`` list (older)."""
    value = _loads(value_json)
    if key == "constraints" and isinstance(value, list):
        into.update({str(i): float(v) for i, v in enumerate(value) if isinstance(v, (int, float))})
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        into[key.split(":", 1)[1]] = float(value)


def _assemble_experiments(studies: Iterable[Any], directions: Iterable[Any], attrs: Iterable[Any],
                          names: Iterable[Any], counts: Iterable[Any], url: str) -> list[StudyRecord]:
    by_id: dict[int, dict[str, Any]] = {sid: {"name": name, "dirs": {}, "attrs": {}, "names": None, "counts": Counter(),
                                              "t0": [], "t1": []} for sid, name in studies}
    for sid, objective, direction in directions:
        if sid in by_id:
            by_id[sid]["dirs"][objective] = "maximize" if str(direction).upper().endswith("MAXIMIZE") else "minimize"
    for sid, key, value_json in attrs:
        if sid in by_id:
            by_id[sid]["attrs"][key] = _loads(value_json)
    for sid, value_json in names:
        if sid in by_id:
            by_id[sid]["names"] = _loads(value_json)
    for sid, state, count, first, last in counts:
        if sid in by_id:
            by_id[sid]["counts"][_state_name(state)] += count
            by_id[sid]["t0"].append(_as_datetime(first))
            by_id[sid]["t1"].append(_as_datetime(last))
    experiments = []
    for sid, info in by_id.items():
        dirs = [info["dirs"][k] for k in sorted(info["dirs"])] or ["minimize"]
        starts = [t for t in info["t0"] if t is not None]
        ends = [t for t in info["t1"] if t is not None]
        experiments.append(StudyRecord(
            name=info["name"], study_id=sid, directions=dirs,
            objective_names=objective_names_for(dirs, info["attrs"], info["names"]),
            user_attrs=info["attrs"], counts=info["counts"], storage_url=shown_url(url),
            trial_started=min(starts) if starts else None, trial_ended=max(ends) if ends else None))
    return experiments


def sql_load(reader: Any, url: str, name: str) -> tuple[StudyRecord, list[TrialRow]] | None:
    found = reader.query("SELECT study_id, study_name FROM studies WHERE study_name = :n", {"n": name})
    if not found:
        return None
    sid = found[0][0]
    bind = {"s": sid}
    directions = reader.query("SELECT study_id, objective, direction FROM study_directions WHERE study_id = :s", bind)
    attrs = reader.query("SELECT study_id, key, value_json FROM study_user_attributes WHERE study_id = :s", bind)
    names = reader.query("SELECT study_id, value_json FROM study_system_attributes WHERE study_id = :s AND key = :k",
                         {"s": sid, "k": METRIC_NAMES_KEY})
    trials = reader.query("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                          "WHERE study_id = :s ORDER BY number", bind)
    values = reader.query("SELECT v.trial_id, v.objective, v.value, v.value_type FROM trial_values v "
                          "JOIN trials t ON t.trial_id = v.trial_id WHERE t.study_id = :s", bind)
    params = reader.query("SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p "
                          "JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = :s ORDER BY p.param_id", bind)
    user_attrs = reader.query("SELECT a.trial_id, a.key, a.value_json FROM trial_user_attributes a "
                              "JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = :s "
                              "ORDER BY a.trial_user_attribute_id", bind)
    counts = Counter(_state_name(row[2]) for row in trials)
    starts = [_as_datetime(row[3]) for row in trials if row[3] is not None]
    ends = [_as_datetime(row[4]) for row in trials if row[4] is not None]
    count_rows = [(sid, state, n, min(starts) if starts else None, max(ends) if ends else None)
                  for state, n in counts.items()]
    experiment = _assemble_experiments(found, directions, attrs, names, count_rows, url)[0]
    rows = _assemble_trials(experiment, trials, values, params, user_attrs)
    by_number = {r.number: r for r in rows}
    for _, number, key, value_json in _constraint_rows(reader, "AND t.study_id = :s", bind):
        if number in by_number:
            _add_constraint(by_number[number].constraints, key, value_json)
    from aup.views.pareto import violation

    experiment.set_best([(r.number, r.values) for r in rows if r.state == "COMPLETE" and r.values],
                        {r.number: violation(r.constraints) for r in rows if r.constraints})
    return experiment, rows


def _assemble_trials(experiment: StudyRecord, trials: Sequence[Any], values: Iterable[Any], params: Iterable[Any],
                     user_attrs: Iterable[Any]) -> list[TrialRow]:
    rows: dict[int, TrialRow] = {}
    for trial_id, number, state, started, completed in trials:
        rows[trial_id] = TrialRow(number=number, state=_state_name(state), values=None, params={}, attrs={},
                                  started=_as_datetime(started), completed=_as_datetime(completed),
                                  objective_names=experiment.objective_names)
    n_objectives = len(experiment.directions)
    for trial_id, objective, value, value_type in values:
        row = rows.get(trial_id)
        if row is not None:
            if row.values is None:
                row.values = [None] * n_objectives  # type: ignore[list-item]
            if objective < n_objectives:
                row.values[objective] = _stored_value(value, value_type)  # type: ignore[index]
    for trial_id, name, value, distribution_json in params:
        row = rows.get(trial_id)
        if row is not None:
            row.params[name] = _external_param(distribution_json, value)
    for trial_id, key, value_json in user_attrs:
        row = rows.get(trial_id)
        if row is not None:
            row.attrs[key] = _loads(value_json)
    return list(rows.values())


def _stored_value(value: float | None, value_type: Any) -> float | None:
    kind = str(value_type).upper()
    if kind.endswith("INF_POS"):
        return math.inf
    if kind.endswith("INF_NEG"):
        return -math.inf
    return value


_INT_DISTRIBUTIONS = frozenset({"IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution"})
_FLOAT_DISTRIBUTIONS = frozenset({"FloatDistribution", "UniformDistribution", "LogUniformDistribution",
                                  "DiscreteUniformDistribution"})


@lru_cache(maxsize=4096)
def _converter(distribution_json: str) -> Callable[[float], Any]:
    """How a stored float becomes the user's value: a choice by index, an int, or the float itself.

    This is what ``optuna.distributions.json_to_distribution(...).to_external_repr`` does for the
    built-in distributions, decided from the JSON alone, because importing optuna for it would
    cost a fifth of the views' time budget. Anything else still goes through optuna.
    """
    spec = json.loads(distribution_json)
    kind = spec.get("name")
    if kind == "CategoricalDistribution":
        choices = spec["attributes"]["choices"]
        return lambda value: choices[int(value)]
    if kind in _INT_DISTRIBUTIONS:
        return lambda value: int(value)
    if kind in _FLOAT_DISTRIBUTIONS:
        return float
    from optuna.distributions import json_to_distribution

    return json_to_distribution(distribution_json).to_external_repr


def _external_param(distribution_json: str, value: float) -> Any:
    """Optuna stores every parameter as a float; the distribution turns it back into the user's value."""
    return _converter(distribution_json)(value)


def _loads(value_json: Any) -> Any:
    try:
        return json.loads(value_json)
    except (TypeError, ValueError):
        return value_json


def _state_name(state: Any) -> str:
    return str(getattr(state, "name", state)).split(".")[-1].upper()


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
