"""The results store: one Optuna RDB storage, one study per experiment.

No set-up step (Auptimizer needed ``aup.setup`` and a DB reset that dropped history): the default
storage is ``sqlite:///<cwd>/.aup/aup.db``, created on first use. Because every experiment is a
plain Optuna study, ``optuna-dashboard`` and ``optuna.load_study`` read aup results directly.

SQLite is opened in WAL mode with a busy timeout, so a running experiment, ``aup list`` and the
dashboard can use the same file at the same time (Auptimizer's shared connection raised
``database is locked``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from aup.errors import UserError
from aup.safe_text import hide_secrets, shown_url
from aup.store_sqlite import (LOCK_WAIT_S, SQLITE_BUSY_TIMEOUT_S, busy_timeout_s, create_private_file,
                              creation_lock, is_lock_error, patient_storage_class, sqlite_path, tune_sqlite,
                              with_creation_retries)
from aup.store_sqlite import retry_locked as _retry_locked

if TYPE_CHECKING:  # optuna is imported lazily: the CLI must start fast
    import optuna

STORAGE_ENV = "AUP_STORAGE"
DEFAULT_DIR = ".aup"
DEFAULT_FILE = "aup.db"
# A runner is one thread with at most one open session, so a small pool is plenty; many runners on
# one server then stay well under PostgreSQL's max_connections (100 by default). pre_ping replaces
# connections the server or a proxy dropped while a long trial ran.
POSTGRES_ENGINE_KWARGS: dict[str, Any] = {"pool_size": 2, "max_overflow": 4, "pool_pre_ping": True}

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
    url = cli_value or os.environ.get(STORAGE_ENV)
    if url:
        shown_url(url)  # remembers the password: every message aup prints masks it
        return with_postgres_driver(url)
    return f"sqlite:///{Path.cwd() / DEFAULT_DIR / DEFAULT_FILE}"


def with_postgres_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) means psycopg 3 when psycopg2 is not installed.

    SQLAlchemy maps a bare ``postgresql://`` to psycopg2, while aup's ``postgres`` extra installs
    psycopg 3; without this a URL copied from ``psql`` fails with "No module named psycopg2".
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    from importlib.util import find_spec

    if find_spec("psycopg2") is None and find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return f"postgresql://{rest}" if scheme == "postgres" else url


def open_storage(url: str, *, create: bool = True) -> "optuna.storages.BaseStorage":
    """An RDBStorage on ``url``; SQLite gets a busy timeout, WAL and ``synchronous=NORMAL``.

    WAL lets readers (views, dashboard) work while the runner writes; NORMAL sync keeps the
    per-trial cost of the many small writes low and is still crash-safe in WAL mode (a power cut
    may lose the last transactions, never corrupt the file). A new SQLite file is created
    owner-only (``.aup/`` 0700, the file 0600) before SQLite sees it; several processes opening a
    brand-new store at once take turns creating the tables. Every storage call waits out a lock
    held longer than the busy timeout (``LOCK_WAIT_S`` in all) instead of failing. With
    ``create=False`` a missing SQLite file is a UserError (``aup resume`` in the wrong folder).
    """
    import sqlalchemy

    is_sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = {}
    path = sqlite_path(url) if is_sqlite else None
    if is_sqlite:
        engine_kwargs["connect_args"] = {"timeout": busy_timeout_s()}
    elif url.startswith("postgres"):
        engine_kwargs.update(POSTGRES_ENGINE_KWARGS)
    if path is not None and not create and not path.exists():
        raise UserError(f"no results store at {path} (nothing has run here yet; see --storage / ${STORAGE_ENV})")
    if path is not None:
        create_private_file(path)
    try:
        with creation_lock(path):
            storage = with_creation_retries(lambda: patient_storage_class()(url, engine_kwargs=engine_kwargs))
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError, ValueError) as exc:
        raise UserError(f"cannot open the storage {shown_url(url)!r}: {hide_secrets(_first_line(exc))}") from None
    if is_sqlite:
        tune_sqlite(storage)
    _OPENED.add(storage.engine)
    return storage


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_OPENED: "weakref.WeakSet[Any]" = weakref.WeakSet()  # engines of the storages this process opened


def close_storages() -> None:
    """Close the pooled connections of every storage this process opened and still holds.

    The last connection to an SQLite file in WAL mode folds the write-ahead log back into the file
    when it closes; a process that ends without closing (``cli.finish_quickly``) would leave the
    results partly in ``aup.db-wal`` (safe, but lost to anyone who copies ``aup.db`` alone).
    """
    for engine in list(_OPENED):
        try:
            engine.dispose()
        except Exception:  # noqa: BLE001 - closing at exit must never fail the command
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
                            sampler: Any = None, pruner: Any = None, unique: bool = False) -> "optuna.Study":
    """The single place where aup creates a study (sampler and pruner come from ``aup.proposer_ext``).

    With ``unique``, a name already taken becomes ``name (2)``, ``name (3)``...: two runs started
    at the same moment both try a name and the one that loses the insert tries the next.
    """
    import optuna

    candidate = unique_study_name(storage, name) if unique else name
    for _ in range(1000):
        try:
            return optuna.create_study(storage=storage, study_name=candidate, directions=list(directions),
                                       sampler=sampler, pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:
            if not unique:
                raise
            candidate = unique_study_name(storage, name)
    raise UserError(f"cannot find a free study name for {name!r}")


def study_id(study: "optuna.Study") -> int:
    """The storage id of a study (optuna keeps it private)."""
    return study._study_id


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
    _retry_locked(lambda: _write_trial_user_attrs(study, trial, attrs))


def _write_trial_user_attrs(study: "optuna.Study", trial: Any, attrs: dict[str, Any]) -> None:
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


SLUG_MAX = 60
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def slug(name: str) -> str:
    """A file-name-safe prefix for a study's files, distinct for distinct names.

    A plain lowercase name (``exp``, ``digits-2``) is its own slug. Any other name (spaces,
    capitals, slashes, ``..``, markup, very long names) becomes its safe characters plus a short
    hash of the exact name, so ``exp a`` and ``exp_a`` never share files, ``..`` or ``../x`` cannot
    leave the folder, and case-insensitive file systems keep ``Exp`` and ``exp`` apart.
    """
    if _SAFE_NAME.match(name) and len(name) <= SLUG_MAX and ".." not in name:
        return name
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.-")[:SLUG_MAX - 9].rstrip("_.-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{text or 'experiment'}-{digest}"


def is_safe_file_name(name: str) -> bool:
    """True for a single path component aup may create and delete (no separators, not ``.``/``..``)."""
    return bool(name) and name not in (".", "..") and re.fullmatch(r"[A-Za-z0-9._-]+", name) is not None


def sql_engine(storage: "optuna.storages.BaseStorage") -> Any:
    """The SQLAlchemy engine under an RDB storage (for aup's own tables, e.g. leases), or None."""
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "engine", None)


def retry_locked(action: Any) -> Any:
    """Run ``action`` (a database call of aup's own), waiting out a lock as the storage does."""
    return _retry_locked(action)


def trials_in_budget(study: "optuna.Study", below_number: int | None = None) -> int:
    """How many trials of ``study`` use up ``n_samples``: running or finished, not interrupted.

    One COUNT query, whichever runner made the trials (several runners share one study). With
    ``below_number``, only trials numbered below it. Storages other than Optuna's RDB fall back
    to reading the trials.
    """
    from optuna.trial import TrialState

    states = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    backend = getattr(study._storage, "_backend", study._storage)
    try:
        import sqlalchemy as sa
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        session_factory = backend.scoped_session
    except (ImportError, AttributeError):
        return sum(1 for t in study.get_trials(deepcopy=False, states=states)
                   if not t.user_attrs.get("interrupted") and (below_number is None or t.number < below_number))
    trial, attr = models.TrialModel, models.TrialUserAttributeModel
    interrupted = sa.select(attr.trial_id).where(attr.trial_id == trial.trial_id, attr.key == "interrupted",
                                                 attr.value_json == "true")
    query = sa.select(sa.func.count()).select_from(trial).where(
        trial.study_id == study._study_id, trial.state.in_(states), ~sa.exists(interrupted))
    if below_number is not None:
        query = query.where(trial.number < below_number)
    with _create_scoped_session(session_factory) as session:
        return int(session.execute(query).scalar() or 0)
