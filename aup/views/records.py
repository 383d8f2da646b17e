"""Experiments and trials read back from the results store as plain rows.

Why not ``study.get_trials()``: building 1,000 ``FrozenTrial`` objects through Optuna's ORM costs
about 0.8 s on SQLite, on top of ~0.35 s for opening an ``RDBStorage`` (ORM import and schema
check), which alone breaks the 1 s budget of ``aup list`` / ``aup compare``. So the views read
Optuna's tables (``studies``, ``trials``, ``trial_params``, ``trial_values``,
``trial_user_attributes``...) with a handful of bulk SQL queries (stdlib ``sqlite3`` for SQLite
files, SQLAlchemy for other databases),
and only fall back to Optuna's API for storages that are not SQL databases. The two paths build
the same rows (a test checks it), so nothing else needs to know which one ran.

A :class:`TrialRow` keeps Optuna's namespaces apart (values, params, user attributes) and offers a
flat view (:meth:`TrialRow.flat`) where every hyperparameter and metric is one column, with the
derived columns users compare on: ``<metric>_ratio`` (to the uncompressed baseline the compressor
recorded as ``baseline_<metric>``) and ``sparsity[<layer>]`` / ``bits[<layer>]``.
"""
from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from aup import metrics as M
from aup.errors import UserError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
RATIO_METRICS = (M.SCORE, M.PARAM_COUNT, M.NONZERO_PARAMS, M.MACS, M.MODEL_BYTES, M.MODEL_BYTES_GZIP, M.LATENCY_MS,
                 M.LATENCY_MS_TORCH, M.MODEL_BYTES_PACKED,
                 "accuracy")
LAYER_PREFIXES = {M.LAYER_SPARSITY: "sparsity", M.LAYER_BITS: "bits"}
# Bookkeeping attributes that are not metrics: kept out of the flat row (job_config repeats the params).
NON_METRIC_ATTRS = frozenset({"job_config"})
METRIC_NAMES_KEY = "study:metric_names"
RESERVED_COLUMNS = frozenset({*M.ALL_METRICS, "accuracy", "number", "state", "duration_s"})  # where optuna's ``study.set_metric_names`` keeps objective names


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
        for metric in RATIO_METRICS:
            ratio = _ratio(row.get(metric), self.attrs.get(M.BASELINE_PREFIX + metric))
            if ratio is not None:
                row[f"{metric}_ratio"] = ratio
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
    return f"param:{name}" if name in reserved else name


def _ratio(value: Any, baseline: Any) -> float | None:
    if not _is_number(value) or not _is_number(baseline) or baseline == 0:
        return None
    return float(value) / float(baseline)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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

    def set_best(self, completed: Sequence[tuple[int, Sequence[float | None]]]) -> None:
        """Best trial (one objective) or non-dominated trials (several) among completed trials."""
        from aup.views.pareto import non_dominated

        signs = [-1.0 if d == "maximize" else 1.0 for d in self.directions]
        usable = [(n, list(v)) for n, v in completed
                  if len(v) == len(signs) and all(x is not None and not math.isnan(x) for x in v)]
        points = [[x * s for x, s in zip(v, signs)] for _, v in usable]
        front = non_dominated(points)
        if len(signs) == 1:
            front = front[:1]  # Optuna's best_trial: the first trial reaching the best value
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


# --------------------------------------------------------------------------------------------------
# Opening a store


class RecordReader:
    """A read-only handle on a results store: a SQL reader, or an Optuna storage as fallback."""

    def __init__(self, url: str, reader: "Callable[[], Any] | None" = None,
                 storage: "optuna.storages.BaseStorage | None" = None) -> None:
        self.url = url
        self.reader = reader  # a factory of context managers with .query(sql, params) -> rows
        self.storage = storage

    def optuna_storage(self) -> "optuna.storages.BaseStorage":
        """The Optuna storage on the same URL (for the dashboard and the API fallback)."""
        if self.storage is None:
            from aup.store import open_storage

            self.storage = open_storage(self.url)
        return self.storage

    def experiments(self) -> list[StudyRecord]:
        if self.reader is not None:
            with self.reader() as reader:
                return _sql_experiments(reader, self.url)
        return _api_experiments(self.optuna_storage(), self.url)

    def experiment_names(self) -> list[str]:
        return [experiment.name for experiment in self.experiments()]

    def load(self, name: str) -> tuple[StudyRecord, list[TrialRow]]:
        """The experiment ``name`` and all its trials, ordered by trial number."""
        if self.reader is not None:
            with self.reader() as reader:
                loaded = _sql_load(reader, self.url, name)
            if loaded is None:
                self._unknown(name)
            return loaded  # type: ignore[return-value]
        return _api_load(self.optuna_storage(), self.url, name, self._unknown)

    def _unknown(self, name: str) -> None:
        from aup.errors import closest

        names = sorted(self.experiment_names())
        close = closest(name, names)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(repr(n) for n in names[:10]) or "none yet"
        raise UserError(f"no experiment named {name!r} in {self.url} (known: {known}){hint}")


REQUIRED_TABLES = frozenset({"studies", "trials", "trial_values", "trial_params", "trial_user_attributes"})


class _SqliteReader:
    """Stdlib sqlite3, opened read-write-but-never-create: importing SQLAlchemy alone costs ~0.3 s."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> "_SqliteReader":
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


class _SqlAlchemyReader:
    """Any other SQLAlchemy URL (PostgreSQL, MySQL...)."""

    def __init__(self, engine: "sqlalchemy.engine.Engine") -> None:
        self.engine = engine

    def __enter__(self) -> "_SqlAlchemyReader":
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


def open_store(url: str) -> RecordReader:
    """A read-only RecordReader on ``url``; a missing SQLite file is a UserError, never silently created."""
    path = sqlite_path(url)
    if path is not None:
        if not Path(path).expanduser().exists():
            raise UserError(f"no results store at {path} (run an experiment first, or pass --storage URL)")
        factory: Callable[[], Any] = lambda: _SqliteReader(path)  # noqa: E731
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    else:
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as exc:
            raise UserError(f"cannot open the storage {url!r}: {str(exc).splitlines()[0]}") from None
        factory = lambda: _SqlAlchemyReader(engine)  # noqa: E731
        errors = (sqlalchemy.exc.SQLAlchemyError,)
    try:
        with factory() as reader:
            tables = reader.tables()
    except errors as exc:
        raise UserError(f"cannot open the storage {url!r}: {str(exc).splitlines()[0]}") from None
    if not REQUIRED_TABLES <= tables:
        if not tables:
            raise UserError(f"{url} holds no aup results yet (run an experiment first)")
        raise UserError(f"{url} is not an Optuna/aup results store (tables: {', '.join(sorted(tables)[:6])})")
    return RecordReader(url, reader=factory)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # a running experiment may hold the write lock briefly
    return {}


# --------------------------------------------------------------------------------------------------
# Fast path: bulk SQL over Optuna's tables


def _sql_experiments(reader: Any, url: str) -> list[StudyRecord]:
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
    for experiment in experiments:
        by_number = completed.get(experiment.study_id, {})
        experiment.set_best([(n, [v.get(i) for i in range(len(experiment.directions))])
                             for n, v in sorted(by_number.items())])
    return experiments


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
            user_attrs=info["attrs"], counts=info["counts"], storage_url=url,
            trial_started=min(starts) if starts else None, trial_ended=max(ends) if ends else None))
    return experiments


def _sql_load(reader: Any, url: str, name: str) -> tuple[StudyRecord, list[TrialRow]] | None:
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
    experiment.set_best([(r.number, r.values) for r in rows if r.state == "COMPLETE" and r.values])
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


# --------------------------------------------------------------------------------------------------
# Fallback: Optuna's public API (non-SQL storages, and the reference the fast path is tested against)


def _api_experiments(storage: "optuna.storages.BaseStorage", url: str) -> list[StudyRecord]:
    experiments = []
    for summary in storage.get_all_studies():
        trials = storage.get_all_trials(summary._study_id, deepcopy=False)
        experiments.append(_api_experiment(summary, storage, url, trials))
    return experiments


def _api_experiment(study: Any, storage: Any, url: str, trials: Sequence[Any]) -> StudyRecord:
    sid = study._study_id
    dirs = ["maximize" if d.name == "MAXIMIZE" else "minimize" for d in study.directions]
    system = storage.get_study_system_attrs(sid)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    experiment = StudyRecord(
        name=study.study_name, study_id=sid, directions=dirs,
        objective_names=objective_names_for(dirs, dict(study.user_attrs), system.get(METRIC_NAMES_KEY)),
        user_attrs=dict(study.user_attrs), counts=Counter(t.state.name for t in trials), storage_url=url,
        trial_started=_naive_utc(min(starts)) if starts else None,
        trial_ended=_naive_utc(max(ends)) if ends else None)
    experiment.set_best([(t.number, list(t.values)) for t in sorted(trials, key=lambda t: t.number)
                         if t.state.name == "COMPLETE" and t.values])
    return experiment


def _naive_utc(moment: datetime) -> datetime:
    """Optuna's API returns local naive datetimes; the tables hold naive UTC. Rows use naive UTC."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _api_load(storage: "optuna.storages.BaseStorage", url: str, name: str,
              unknown: Any) -> tuple[StudyRecord, list[TrialRow]]:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        unknown(name)
        raise
    trials = study.get_trials(deepcopy=False)
    experiment = _api_experiment(study, storage, url, trials)
    return experiment, rows_from_frozen(trials, experiment.objective_names)


def rows_from_frozen(trials: Iterable["optuna.trial.FrozenTrial"], objective_names: Sequence[str]) -> list[TrialRow]:
    """TrialRows from Optuna FrozenTrials (the reference representation)."""
    return [TrialRow(number=t.number, state=t.state.name, values=list(t.values) if t.values is not None else None,
                     params=dict(t.params), attrs=dict(t.user_attrs),
                     started=_naive_utc(t.datetime_start) if t.datetime_start else None,
                     completed=_naive_utc(t.datetime_complete) if t.datetime_complete else None,
                     objective_names=objective_names)
            for t in sorted(trials, key=lambda t: t.number)]
