"""The results store: one Optuna RDB storage, one study per experiment.

No set-up step (Auptimizer needed ``aup.setup`` and a DB reset that dropped history): the default
storage is ``sqlite:///<cwd>/.aup/aup.db``, created on first use. Because every experiment is a
plain Optuna study, ``optuna-dashboard`` and ``optuna.load_study`` read aup results directly.

SQLite is opened in WAL mode with a busy timeout, so a running experiment, ``aup list`` and the
dashboard can use the same file at the same time (Auptimizer's shared connection raised
``database is locked``).
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from aup.errors import UserError

if TYPE_CHECKING:  # optuna is imported lazily: the CLI must start fast
    import optuna

STORAGE_ENV = "AUP_STORAGE"
DEFAULT_DIR = ".aup"
DEFAULT_FILE = "aup.db"
SQLITE_BUSY_TIMEOUT_S = 30

# Study user attributes (the contract the views read).
ATTR_EXPERIMENT = "experiment"
ATTR_EXPERIMENT_PATH = "experiment_path"
ATTR_WORKINGDIR = "workingdir"
ATTR_STATUS = "status"
ATTR_STARTED = "started"
ATTR_ENDED = "ended"
STATUSES = ("running", "finished", "failed", "interrupted")


def now_iso() -> str:
    """Local wall-clock time with offset, second precision (what users read in the views)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def resolve_storage_url(cli_value: str | None) -> str:
    """``--storage`` wins, then ``$AUP_STORAGE``, else ``sqlite:///<cwd>/.aup/aup.db``.

    Nothing is created here: ``open_storage`` makes ``.aup/`` when a run writes, so read-only
    commands (``aup list`` in an empty folder) leave no trace."""
    if cli_value:
        return cli_value
    env = os.environ.get(STORAGE_ENV)
    if env:
        return env
    return f"sqlite:///{Path.cwd() / DEFAULT_DIR / DEFAULT_FILE}"


def open_storage(url: str) -> "optuna.storages.BaseStorage":
    """An RDBStorage on ``url``; SQLite gets a busy timeout, WAL and ``synchronous=NORMAL``.

    WAL lets readers (views, dashboard) work while the runner writes; NORMAL sync keeps the
    per-trial cost of the many small writes low and is still crash-safe in WAL mode (a power cut
    may lose the last transactions, never corrupt the file).
    """
    import optuna
    import sqlalchemy

    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        _ensure_sqlite_parent(url)
    engine_kwargs: dict[str, Any] = {}
    if is_sqlite:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError, ValueError) as exc:
        raise UserError(f"cannot open the storage {url!r}: {str(exc).splitlines()[0]}") from None
    if is_sqlite:
        _tune_sqlite(storage)
    return storage


def _ensure_sqlite_parent(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _tune_sqlite(storage: "optuna.storages.RDBStorage") -> None:
    import sqlalchemy

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened during table creation lack the pragmas
    with storage.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        if mode != "wal":  # e.g. a network file system: keep going with the default journal
            pass


def study_names(storage: "optuna.storages.BaseStorage") -> list[str]:
    return [summary.study_name for summary in storage.get_all_studies()]


def unique_study_name(storage: "optuna.storages.BaseStorage", name: str) -> str:
    """``name`` if free, else ``name (2)``, ``name (3)``... (Auptimizer's de-duplication)."""
    taken = set(study_names(storage))
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"


def load_experiment_study(storage: "optuna.storages.BaseStorage", name: str, *,
                          sampler: Any = None, pruner: Any = None) -> "optuna.Study":
    """The study of experiment ``name``; UserError listing the known names when there is none."""
    import optuna

    names = study_names(storage)
    if name not in names:
        known = ", ".join(repr(n) for n in sorted(names)) or "none yet"
        raise UserError(f"no experiment named {name!r} in the storage (known: {known})")
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def create_experiment_study(storage: "optuna.storages.BaseStorage", name: str, directions: Sequence[str], *,
                            sampler: Any = None, pruner: Any = None) -> "optuna.Study":
    """The single place where aup creates a study (sampler and pruner come from ``aup.proposer_ext``)."""
    import optuna

    return optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                               sampler=sampler, pruner=pruner)


def trial_id(trial: Any) -> int:
    """The storage id of a trial (``optuna.Trial`` or ``FrozenTrial``); optuna keeps it private."""
    return trial._trial_id


def set_trial_user_attrs(study: "optuna.Study", trial: Any, attrs: dict[str, Any]) -> None:
    """Set several user attributes of a trial (``optuna.Trial`` or ``FrozenTrial``) in one transaction.

    Optuna writes one attribute per transaction (a trial lookup and an upsert each); the runner
    records six to ten attributes per trial, so this is most of its database time. With an
    RDBStorage on SQLite all attributes go in one multi-row upsert after one state check; other
    RDB engines use optuna's own per-attribute writer inside one session; any other storage (or an
    optuna without those internals) gets the public one-by-one calls.
    """
    storage = study._storage
    ident = trial_id(trial)
    backend = getattr(storage, "_backend", storage)
    writer = getattr(backend, "_set_trial_attr_without_commit", None)
    if writer is not None and len(attrs) > 1:
        try:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session
        except ImportError:
            writer = None
        else:
            with _create_scoped_session(backend.scoped_session, True) as session:
                if getattr(getattr(backend, "engine", None), "name", "") == "sqlite":
                    _upsert_sqlite_attrs(backend, session, models, ident, attrs)
                else:
                    for key, value in attrs.items():
                        writer(session, models.TrialUserAttributeModel, ident, key, value)
            return
    for key, value in attrs.items():
        storage.set_trial_user_attr(ident, key, value)


def _upsert_sqlite_attrs(backend: Any, session: Any, models: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """One ``INSERT ... ON CONFLICT DO UPDATE`` for all attributes (what optuna does per key)."""
    from sqlalchemy.dialects.sqlite import insert

    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
    backend.check_trial_is_updatable(trial_id, trial.state)
    model = models.TrialUserAttributeModel
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    statement = insert(model).values(rows)
    session.execute(statement.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                                    set_={"value_json": statement.excluded.value_json}))


def latest_study_for(storage: "optuna.storages.BaseStorage", name: str) -> str | None:
    """The most recent study of an experiment named ``name`` (``name`` or ``name (n)``), or None."""
    pattern = re.compile(rf"^{re.escape(name)}( \((\d+)\))?$")
    best: tuple[int, str] | None = None
    for study_name in study_names(storage):
        match = pattern.match(study_name)
        if match:
            rank = int(match.group(2) or 1)
            if best is None or rank > best[0]:
                best = (rank, study_name)
    return best[1] if best else None


def slug(name: str) -> str:
    """A file-name-safe form of a study name (``my exp (2)`` -> ``my_exp_2``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return text or "experiment"
