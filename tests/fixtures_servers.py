"""Real servers for the scale-out tests, on 127.0.0.1 only: PostgreSQL and a local Ray cluster.

PostgreSQL comes from the distribution's packages (Debian: ``/usr/lib/postgresql/<v>/bin``): one
throw-away cluster per test session (``initdb`` in a temp dir, a free port, the socket in the same
dir), stopped at the end. ``initdb`` refuses to run as root, so as root the cluster belongs to the
``postgres`` user. ``AUP_TEST_POSTGRES_URL`` points the tests at an existing server instead. Every
test gets its own database, so studies never leak from one test into another.

When no server can start the tests that need one are skipped with the reason (``-ra`` lists it in
the summary); nothing is ever downloaded.

The start/stop helpers are plain functions, so ``benchmarks/scale_out.py`` starts its servers the
same way.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

POSTGRES_URL_ENV = "AUP_TEST_POSTGRES_URL"
DRIVER = "postgresql+psycopg"


class ServerUnavailable(RuntimeError):
    """No server could be started here; the message is the reason shown to the user."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(found)
    if not candidates:
        raise ServerUnavailable("PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql)")
    return Path(candidates[0]).parent


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit()) or (0,)


@dataclass
class PostgresServer:
    """A running PostgreSQL server; ``base_url`` has no database name, ``admin_url`` the default one."""

    base_url: str
    admin_db: str
    datadir: Path | None = None
    bindir: Path | None = None
    run_as: str | None = None

    @property
    def admin_url(self) -> str:
        return f"{self.base_url}/{self.admin_db}"

    def new_database(self) -> str:
        """A fresh empty database on the server; returns its SQLAlchemy URL."""
        import psycopg

        name = f"aup_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.base_url}/{name}"

    def stop(self) -> None:
        if self.datadir is None or self.bindir is None:
            return
        _run(self.run_as, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"],
             check=False)
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq understands it (no ``+driver``)."""
    return url.replace(f"{DRIVER}://", "postgresql://", 1)


def _run(user: str | None, command: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise ServerUnavailable(f"{Path(command[-1] if user is None else command[4]).name} failed: "
                                f"{last[-1] if last else result.returncode}")
    return result


def start_postgres(settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb + pg_ctl start on 127.0.0.1 and a free port; raises ServerUnavailable with the reason."""
    try:
        import psycopg  # noqa: F401  (the driver the store uses; without it the server is useless)
    except ImportError:
        raise ServerUnavailable("psycopg is not installed (pip install 'aup[postgres]')") from None
    bindir = _postgres_bindir()
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("running as root and there is no 'postgres' user for initdb") from None
        run_as = "postgres"
    top = Path(tempfile.mkdtemp(prefix="aup-pg-"))
    datadir = top / "data"
    if run_as:
        shutil.chown(top, user=run_as)
    _run(run_as, [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync"])
    port = free_port()
    options = {"listen_addresses": "127.0.0.1", "fsync": "off", "max_connections": "100", **(settings or {})}
    server_opts = " ".join([f"-p {port}", f"-k {top}", *(f"-c {k}={v}" for k, v in options.items())])
    _run(run_as, [str(bindir / "pg_ctl"), "-D", str(datadir), "-o", server_opts, "-l", str(top / "server.log"),
                  "-w", "-t", "60", "start"])
    return PostgresServer(f"{DRIVER}://postgres@127.0.0.1:{port}", "postgres", datadir, bindir, run_as)


def external_postgres(url: str) -> PostgresServer:
    """A server given by URL (``AUP_TEST_POSTGRES_URL``); tests create their databases on it."""
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", f"{DRIVER}://", 1)
    base, _, database = url.rpartition("/")
    if "://" not in base or not database:
        raise ServerUnavailable(f"{POSTGRES_URL_ENV} must name a database: {DRIVER}://USER@HOST:PORT/DB")
    return PostgresServer(base, database)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (or the one named by ``AUP_TEST_POSTGRES_URL``)."""
    given = os.environ.get(POSTGRES_URL_ENV)
    try:
        server = external_postgres(given) if given else start_postgres()
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of a new, empty database of its own for this test."""
    return postgres_server.new_database()


# ---- Ray -----------------------------------------------------------------------------------------
RAY_CPUS = 2
# Ray reads its authentication settings when it is imported: set them before anything imports it.
# Token auth with a token held in the environment (inherited by the runners the tests start), so
# Ray never writes ~/.ray/auth_token.
os.environ.setdefault("RAY_AUTH_MODE", "token")
if os.environ["RAY_AUTH_MODE"] == "token":
    os.environ.setdefault("RAY_AUTH_TOKEN", uuid.uuid4().hex + uuid.uuid4().hex)


@dataclass
class RayCluster:
    """A local Ray cluster whose head is this test process; ``address`` is for runners in subprocesses."""

    address: str
    temp_dir: Path


def start_ray(num_cpus: int = RAY_CPUS) -> RayCluster:
    """``ray.init`` here (no dashboard, files in a temp dir, token auth with a token held in the
    environment so that nothing is written to ``~/.ray``); subprocesses inherit the token."""
    try:
        import ray
    except ImportError:
        raise ServerUnavailable("Ray is not installed (pip install 'aup[ray]')") from None
    temp_dir = Path(tempfile.mkdtemp(prefix="aup-ray-"))
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 _node_ip_address="127.0.0.1", _temp_dir=str(temp_dir))
    except Exception as exc:  # noqa: BLE001 - any start-up failure is a reason to skip, shown to the user
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise ServerUnavailable(f"ray.init failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    return RayCluster(ray.get_runtime_context().gcs_address, temp_dir)


def stop_ray(cluster: RayCluster) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """One local Ray cluster (``RAY_CPUS`` CPUs) for the whole session."""
    try:
        cluster = start_ray()
    except ServerUnavailable as exc:
        pytest.skip(f"no Ray cluster: {exc}")
    try:
        yield cluster
    finally:
        stop_ray(cluster)
