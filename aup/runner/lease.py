"""A lease: a named lock in the results database that expires unless its holder renews it.

One runner owns a study's proposer loop at a time: it takes the lease ``runner:<study name>``
before it touches the study, renews it while it runs (a heartbeat), and gives it back at the end.
A second ``aup resume`` of the same study finds the lease held and stops with one line instead of
running the same trials again. A holder that died leaves a stale lease: it is taken over once it
has expired, or at once when the holder was a process on this host that no longer exists.

The lease is a row in aup's own table ``aup_leases`` in the same database as the studies (SQLite,
PostgreSQL, MySQL), changed only by single conditional statements, so two processes can never both
believe they hold it. Expiry uses the database's clock, not the hosts'. Workers that join a study
(several processes on a shared store) use the same primitive under other names.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aup import store
from aup.runner.launcher import pid_alive

DEFAULT_TTL_S = 30.0
TABLE = "aup_leases"
_DDL = (f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(512) PRIMARY KEY, owner VARCHAR(64) NOT NULL, "
        "host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, expires FLOAT NOT NULL)")
_NOW = {
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())",
    "mysql": "UNIX_TIMESTAMP(NOW(6))",
}


@dataclass(frozen=True)
class Holder:
    """Who holds a lease and until when (database clock, seconds since the epoch)."""

    owner: str
    host: str
    pid: int
    expires: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


class LeaseError(RuntimeError):
    """The store cannot hold leases (not an SQL database)."""


class Lease:
    """The lease ``name`` for this process: ``acquire``, then ``heartbeat`` regularly, then ``release``."""

    def __init__(self, storage: Any, name: str, *, ttl: float = DEFAULT_TTL_S) -> None:
        self.engine = store.sql_engine(storage)
        if self.engine is None:
            raise LeaseError("leases need an SQL store (SQLite, PostgreSQL, MySQL)")
        self.name = name
        self.ttl = float(ttl)
        self.owner = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.held = False
        self._renewed = 0.0
        self._now = _NOW.get(self.engine.dialect.name)
        self._ensure_table()

    # ---- public ------------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the lease if it is free, ours, expired, or held by a dead process on this host."""
        for _ in range(3):  # a concurrent insert or takeover: look again
            holder = self.holder()
            if holder is None:
                if self._insert():
                    return self._got()
                continue
            if holder.owner == self.owner:
                return self.renew()
            if not self._stale(holder):
                return False
            if self._take_over(holder):
                return self._got()
        return False

    def renew(self) -> bool:
        """Extend the lease; False (and ``held`` False) when another process has taken it."""
        count = self._execute(f"UPDATE {TABLE} SET expires = {self._expiry()} WHERE name = :name AND owner = :owner",
                              self._params())
        self.held = count == 1
        if self.held:
            self._renewed = time.monotonic()
        return self.held

    def heartbeat(self) -> bool:
        """Renew when a third of the lifetime has passed since the last renewal; True while held."""
        if self.held and time.monotonic() - self._renewed >= self.ttl / 3:
            self.renew()
        return self.held

    def release(self) -> None:
        if self.held:
            self._execute(f"DELETE FROM {TABLE} WHERE name = :name AND owner = :owner",
                          {"name": self.name, "owner": self.owner})
            self.held = False

    def holder(self) -> Holder | None:
        import sqlalchemy

        def read() -> Any:
            with self.engine.connect() as connection:
                return connection.execute(sqlalchemy.text(
                    f"SELECT owner, host, pid, expires FROM {TABLE} WHERE name = :name"), {"name": self.name}).first()

        row = store.retry_locked(read)
        return Holder(row[0], row[1], int(row[2]), float(row[3])) if row else None

    # ---- internals ---------------------------------------------------------------------------
    def _got(self) -> bool:
        self.held = True
        self._renewed = time.monotonic()
        return True

    def _expiry(self) -> str:
        return f"({self._now} + :ttl)" if self._now else ":python_now + :ttl"

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "owner": self.owner, "host": self.host, "pid": self.pid, "ttl": self.ttl,
                "python_now": time.time(), **extra}

    def _ensure_table(self) -> None:
        import sqlalchemy

        def create() -> None:
            with self.engine.begin() as connection:
                connection.execute(sqlalchemy.text(_DDL))

        try:
            store.retry_locked(create)
        except sqlalchemy.exc.SQLAlchemyError:  # a concurrent creator won (PostgreSQL catalog race)
            store.retry_locked(create)

    def _insert(self) -> bool:
        import sqlalchemy

        try:
            return self._execute(f"INSERT INTO {TABLE} (name, owner, host, pid, expires) "
                                 f"VALUES (:name, :owner, :host, :pid, {self._expiry()})", self._params()) == 1
        except sqlalchemy.exc.IntegrityError:
            return False

    def _take_over(self, holder: Holder) -> bool:
        return self._execute(
            f"UPDATE {TABLE} SET owner = :owner, host = :host, pid = :pid, expires = {self._expiry()} "
            "WHERE name = :name AND owner = :old_owner", self._params(old_owner=holder.owner)) == 1

    def _stale(self, holder: Holder) -> bool:
        """Expired, or (on this host) its process is gone; a live aup process here keeps its lease."""
        if holder.host != self.host:
            return self._expired(holder)
        if holder.pid != self.pid and not pid_alive(holder.pid):
            return True
        return self._expired(holder) and (holder.pid == self.pid or not _looks_like_aup(holder.pid))

    def _expired(self, holder: Holder) -> bool:
        return holder.expires < self._db_now()

    def _db_now(self) -> float:
        if self._now is None:
            return time.time()
        import sqlalchemy

        def read() -> float:
            with self.engine.connect() as connection:
                return float(connection.execute(sqlalchemy.text(f"SELECT {self._now}")).scalar())

        return store.retry_locked(read)

    def _execute(self, sql: str, params: dict[str, Any]) -> int:
        import sqlalchemy

        def run() -> int:
            with self.engine.begin() as connection:
                return connection.execute(sqlalchemy.text(sql), params).rowcount

        return store.retry_locked(run)


def live_holders(storage: Any, prefix: str) -> list[Holder]:
    """Holders of the leases whose names start with ``prefix`` that are not stale (e.g. a study's
    live workers), by the rule ``acquire`` applies before taking a lease over."""
    import sqlalchemy

    probe = Lease(storage, prefix)

    def read() -> Any:
        with probe.engine.connect() as connection:
            query = sqlalchemy.text(f"SELECT name, owner, host, pid, expires FROM {TABLE}")
            return connection.execute(query).fetchall()

    holders = [Holder(row[1], row[2], int(row[3]), float(row[4])) for row in store.retry_locked(read)
               if str(row[0]).startswith(prefix)]
    return [holder for holder in holders if not probe._stale(holder)]




def _looks_like_aup(pid: int) -> bool:
    """A reused pid that is not running aup does not hold anything."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"aup" in handle.read()
    except OSError:
        return True  # no /proc: trust the pid
