"""The SQLite and lock side of the results store (used by ``aup.store``; nothing else imports it).

A new SQLite file is created owner-only and race-free, table creation on one file is serialised
across processes, SQLite gets its pragmas, and every storage call waits out a lock that another
program holds longer than SQLite's busy timeout instead of failing.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import optuna

SQLITE_BUSY_TIMEOUT_S = 30
LOCK_WAIT_S = 600.0  # how long a call keeps waiting for a lock held by another program
LOCK_NOTE_EVERY_S = 30.0


def busy_timeout_s() -> float:
    """SQLite's busy timeout; ``AUP_SQLITE_BUSY_TIMEOUT`` overrides it (tests use a short one)."""
    try:
        return float(os.environ.get("AUP_SQLITE_BUSY_TIMEOUT", SQLITE_BUSY_TIMEOUT_S))
    except ValueError:
        return float(SQLITE_BUSY_TIMEOUT_S)


def sqlite_path(url: str) -> Path | None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path).expanduser()


def create_private_file(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by the owner only; an existing file is left alone.

    ``O_EXCL`` makes the creation race-free; SQLite gives its -wal/-shm files the database's mode.
    """
    parent = path.parent
    if not parent.is_dir():
        try:
            parent.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # a read-only place: SQLAlchemy reports it with the storage URL
    os.close(descriptor)


@contextlib.contextmanager
def creation_lock(path: Path | None) -> Iterator[None]:
    """Serialise table creation on one SQLite file across processes (a sidecar ``.lock`` file)."""
    if path is None:
        yield
        return
    try:
        import fcntl

        descriptor = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def with_creation_retries(make: Any, attempts: int = 5) -> Any:
    """Run ``make``; "table already exists" from a concurrent creator (PostgreSQL, MySQL) is retried."""
    import sqlalchemy

    for attempt in range(attempts):
        try:
            return make()
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError,
                sqlalchemy.exc.IntegrityError) as exc:
            text = str(exc).lower()
            if attempt == attempts - 1 or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def is_lock_error(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" however optuna wrapped it."""
    seen: BaseException | None = exc
    while seen is not None:
        if "database is locked" in str(seen) or "database table is locked" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# A server that is not accepting connections (restarting, recovering): nothing of the call ran, so it
# is safe to try again, writes included. A connection lost mid-call is retried for reads only (a
# write may have been committed just before the connection went).
_NOT_ACCEPTING = ("connection refused", "the database system is starting up", "the database system is shutting down",
                  "the database system is in recovery mode", "the database system is not yet accepting connections",
                  "the database system is not accepting connections")
_LOST = ("server closed the connection unexpectedly", "terminating connection due to", "the connection is lost",
         "connection already closed", "ssl syscall error: eof detected")
SERVER_WAIT_S = 120.0  # how long a call waits for an unreachable database server to come back


def _messages(exc: BaseException) -> Iterator[str]:
    seen: BaseException | None = exc
    while seen is not None:
        yield str(seen).lower()
        seen = seen.__cause__ or seen.__context__


def is_unreachable_error(exc: BaseException, read_only: bool = False) -> bool:
    """True when the database server did not take the call (restarting, down), or, for a read, when
    the connection was lost during it: then calling again is safe."""
    patterns = _NOT_ACCEPTING + (_LOST if read_only else ())
    return any(p in text for text in _messages(exc) for p in patterns)


_patient_class: Any = None
_retrying = threading.local()


def patient_storage_class() -> Any:
    """``RDBStorage`` whose public calls wait out a lock instead of failing (built once, lazily)."""
    global _patient_class
    if _patient_class is not None:
        return _patient_class
    import optuna

    base = optuna.storages.RDBStorage
    # every plain method, private ones too: optuna's cache layer calls the storage's private readers/writers
    names = {name for klass in base.__mro__[:-1] for name, value in vars(klass).items()
             if inspect.isfunction(value) and not name.startswith("__")}
    namespace = {name: _patient(getattr(base, name)) for name in sorted(names)}
    namespace["__doc__"] = "Optuna's RDBStorage; calls that meet a lock held past the busy timeout are retried."
    _patient_class = type("PatientRDBStorage", (base,), namespace)
    return _patient_class


def _patient(method: Any) -> Any:
    read_only = method.__name__.lstrip("_").startswith(("get", "read", "check", "is_"))

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return retry_locked(lambda: method(self, *args, **kwargs), read_only=read_only)

    return call


def retry_locked(action: Any, read_only: bool = False) -> Any:
    """Run ``action``; while SQLite reports a lock, try again until ``LOCK_WAIT_S`` have passed, and
    while the database server is unreachable (``is_unreachable_error``) until ``SERVER_WAIT_S``.

    Only the outermost call retries (a storage method calling another one does not multiply waits).
    """
    if getattr(_retrying, "active", False):
        return action()
    _retrying.active = True
    try:
        began = time.monotonic()
        told = -LOCK_NOTE_EVERY_S
        while True:
            try:
                return action()
            except Exception as exc:  # noqa: BLE001 - filtered just below
                waited = time.monotonic() - began
                locked = is_lock_error(exc)
                if not (locked and waited <= LOCK_WAIT_S
                        or not locked and waited <= SERVER_WAIT_S and is_unreachable_error(exc, read_only)):
                    raise
                if waited - told >= LOCK_NOTE_EVERY_S:
                    told = waited
                    what = "is locked by another program" if locked else "server is unreachable"
                    print(f"aup: the results database {what}; waiting ({waited:.0f} s so far)",
                          file=sys.stderr, flush=True)
                time.sleep(0.2)
    finally:
        _retrying.active = False


def tune_sqlite(storage: "optuna.storages.RDBStorage") -> None:
    import sqlalchemy

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened during table creation lack the pragmas
    with storage.engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        if mode != "wal":  # e.g. a network file system: keep going with the default journal
            pass
