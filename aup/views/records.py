"""Experiments and trials read back from the results store as plain rows.

``open_store(url)`` gives a :class:`RecordReader`: the fast SQL reader (:mod:`aup.views.sql_reader`)
for SQL databases, Optuna's public API for storages that are not SQL databases.  The two paths
build the same rows (:mod:`aup.views.rows`; a test checks it), so nothing else needs to know which
one ran.  The public names of both modules stay importable from here.
"""
from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from aup.errors import UserError
from aup.safe_text import hide_secrets, shown_url
from aup.views.rows import (LAYER_PREFIXES, METRIC_NAMES_KEY, NON_METRIC_ATTRS, RATIO_METRICS, RESERVED_COLUMNS,
                            STATES, StudyRecord, TrialRow, layer_columns, objective_names_for,
                            param_key)
from aup.views.sql_reader import (REQUIRED_TABLES, SqlAlchemyReader, SqliteReader, sql_experiments, sql_load,
                                  sqlite_path)

if TYPE_CHECKING:
    import optuna

__all__ = ["RecordReader", "open_store", "rows_from_frozen", "sqlite_path", "StudyRecord", "TrialRow", "param_key",
           "layer_columns",
           "objective_names_for", "STATES", "RATIO_METRICS", "LAYER_PREFIXES", "NON_METRIC_ATTRS",
           "METRIC_NAMES_KEY", "RESERVED_COLUMNS", "REQUIRED_TABLES"]


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
                return sql_experiments(reader, self.url)
        return _api_experiments(self.optuna_storage(), self.url)

    def experiment_names(self) -> list[str]:
        return [experiment.name for experiment in self.experiments()]

    def load(self, name: str) -> tuple[StudyRecord, list[TrialRow]]:
        """The experiment ``name`` and all its trials, ordered by trial number."""
        if self.reader is not None:
            with self.reader() as reader:
                loaded = sql_load(reader, self.url, name)
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
        raise UserError(f"no experiment named {name!r} in {shown_url(self.url)} (known: {known}){hint}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def open_store(url: str) -> RecordReader:
    """A read-only RecordReader on ``url``; a missing SQLite file is a UserError, never silently created."""
    path = sqlite_path(url)
    if path is not None:
        if not Path(path).expanduser().exists():
            raise UserError(f"no results store at {path} (run an experiment first, or pass --storage URL)")
        factory: Callable[[], Any] = lambda: SqliteReader(path)  # noqa: E731
        errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    else:
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
        except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as exc:
            raise UserError(f"cannot open the storage {shown_url(url)!r}: {hide_secrets(_first_line(exc))}") from None
        factory = lambda: SqlAlchemyReader(engine)  # noqa: E731
        errors = (sqlalchemy.exc.SQLAlchemyError,)
    try:
        with factory() as reader:
            tables = reader.tables()
    except errors as exc:
        raise UserError(f"cannot open the storage {shown_url(url)!r}: {hide_secrets(_first_line(exc))}") from None
    if not REQUIRED_TABLES <= tables:
        if not tables:
            raise UserError(f"{shown_url(url)} holds no aup results yet (run an experiment first)")
        raise UserError(f"{shown_url(url)} is not an Optuna/aup results store (tables: {', '.join(sorted(tables)[:6])})")
    return RecordReader(url, reader=factory)


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30}}  # a running experiment may hold the write lock briefly
    return {}


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
        user_attrs=dict(study.user_attrs), counts=Counter(t.state.name for t in trials), storage_url=shown_url(url),
        trial_started=_naive_utc(min(starts)) if starts else None,
        trial_ended=_naive_utc(max(ends)) if ends else None)
    from aup.views.pareto import violation

    experiment.set_best([(t.number, list(t.values)) for t in sorted(trials, key=lambda t: t.number)
                         if t.state.name == "COMPLETE" and t.values],
                        {t.number: violation(t.constraints) for t in trials if t.constraints})
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
                     objective_names=objective_names, constraints=dict(t.constraints))
            for t in sorted(trials, key=lambda t: t.number)]
