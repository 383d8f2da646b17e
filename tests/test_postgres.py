"""PostgreSQL as the results store: schema on first use, runs, resume after SIGKILL, every view, the dashboard.

The server is a real one on 127.0.0.1 (``tests/fixtures_servers.py``); every test has a database of
its own. The views' answers on PostgreSQL are compared with the same experiment run on SQLite.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import optuna
import pytest
from optuna.trial import TrialState
from resume_checks import assert_resumed_after_kill

from aup import store
from aup.cli import main
from aup.errors import UserError
from aup.views import dashboard
from aup.views.records import open_store, rows_from_frozen

SCRIPTS = Path(__file__).parent / "scripts"
pytestmark = pytest.mark.slow  # a real server starts for the session (about 3 s)

EXPERIMENT = {
    "name": "pg-exp", "script": str(SCRIPTS / "sized.py"), "resource": "cpu", "proposer": "sequence",
    "target": "max", "n_parallel": 2,
    "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 0.9], "interval": 0.2}],
}


def write(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.json"
    path.write_text(json.dumps({**EXPERIMENT, **overrides}))
    return path


def aup(folder: Path, url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "AUP_STORAGE": url}
    return subprocess.Popen([sys.executable, "-m", "aup", *args], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def wait_for(condition: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_schema_is_created_on_first_use(postgres_url: str) -> None:
    with pytest.raises(UserError, match="holds no aup results yet"):
        open_store(postgres_url)  # the views never create anything
    storage = store.open_storage(postgres_url)
    assert store.study_names(storage) == []
    study = store.create_experiment_study(storage, "first", ["maximize"])
    study.tell(study.ask(), 1.0)
    assert [e.name for e in open_store(postgres_url).experiments()] == ["first"]


def test_plain_postgresql_url_uses_psycopg3(postgres_url: str) -> None:
    bare = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    assert store.resolve_storage_url(bare) == postgres_url
    assert store.resolve_storage_url(bare.replace("postgresql://", "postgres://", 1)) == postgres_url
    store.open_storage(store.resolve_storage_url(bare))


def test_synchronous_commit_off_through_the_url(postgres_url: str) -> None:
    storage = store.open_storage(postgres_url + "?options=-c%20synchronous_commit%3Doff")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    with store.open_storage(postgres_url).engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_unreachable_server_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fixtures_servers import free_port

    path = write(tmp_path, n_samples=1)
    code = main(["run", str(path), "--storage", f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("aup: error: cannot open the storage")


def test_a_password_in_the_url_is_never_shown(tmp_path: Path, postgres_url: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The run's last line, ``show``, ``list`` and the files in the working dir (job configs, logs)."""
    secret = "SECRETpw"
    url = postgres_url.replace("://postgres@", f"://postgres:{secret}@", 1)  # trust auth: not checked
    write(tmp_path, workingdir=str(tmp_path))
    code, out, err = finish(aup(tmp_path, url, "experiment.json", "--no-live"))
    assert code == 0, err
    assert secret not in out + err
    assert f"results: {postgres_url.replace('://postgres@', '://postgres:***@', 1)}" in out
    for args in (["show", "pg-exp"], ["list"], ["show", "pg-exp", "--json"], ["list", "--json"]):
        assert main([*args, "--storage", url]) == 0
        shown = capsys.readouterr()
        assert secret not in shown.out + shown.err and "postgres:***@" in shown.out
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_a_store_call_waits_for_a_restarting_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL crashes (``pg_ctl stop -m immediate``); the runner's next writes (a trial's metrics,
    its result) are made while the server is down and complete once it is back, instead of failing."""
    import threading

    from fixtures_servers import ServerUnavailable, _run, start_postgres

    try:
        server = start_postgres()  # a server of its own: this one is stopped and started again
    except ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    try:
        url = server.new_database()
        study = optuna.create_study(storage=store.open_storage(url), study_name="restart")
        trial = study.ask()
        assert server.bindir is not None and server.datadir is not None
        pg_ctl = [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-w", "-t", "60"]
        _run(server.run_as, [*pg_ctl, "-m", "immediate", "stop"])  # a crash
        port = server.base_url.rsplit(":", 1)[1]
        calls_waiting = threading.Event()  # set when a call has met the server down (then it is started)
        from aup import store_sqlite

        unreachable = store_sqlite.is_unreachable_error

        def noticing(exc: BaseException, read_only: bool = False) -> bool:
            met = unreachable(exc, read_only)
            if met:
                calls_waiting.set()
            return met

        monkeypatch.setattr(store_sqlite, "is_unreachable_error", noticing)

        def start_again() -> None:
            calls_waiting.wait(60)
            _run(server.run_as, [*pg_ctl, "-l", str(server.datadir.parent / "server.log"), "-o",
                                 f"-p {port} -k {server.datadir.parent} -c listen_addresses=127.0.0.1", "start"])

        starter = threading.Thread(target=start_again)
        starter.start()
        store.set_trial_user_attrs(study, trial, {"model_bytes": 123})
        study.tell(trial, 1.0)
        starter.join(120)
        assert calls_waiting.is_set()
        [done] = optuna.load_study(study_name="restart", storage=url).trials
        assert done.state == TrialState.COMPLETE and done.value == 1.0 and done.user_attrs["model_bytes"] == 123
    finally:
        server.stop()


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without what differs between two runs of the same experiment (times, pids, paths)."""
    varying = {"duration_s", "host_pid", "started", "completed", "log_path", "job_config_path", "attempts"}
    return [{k: v for k, v in row.items() if k not in varying} for row in rows]


def test_experiment_on_postgres_and_every_view(tmp_path: Path, postgres_url: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'lite' / 'aup.db'}"
    for folder, url in ((tmp_path / "pg", postgres_url), (tmp_path / "lite", sqlite_url)):
        write(folder)
        code, _, err = finish(aup(folder, url, "experiment.json", "--no-live"))
        assert code == 0, err

    def views(url: str, *args: str) -> Any:
        assert main([*args, "--storage", url, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    [listed] = views(postgres_url, "list")
    assert (listed["name"], listed["status"], listed["trials"], listed["complete"]) == ("pg-exp", "finished", 5, 5)
    assert listed["storage"] == postgres_url
    shown = views(postgres_url, "show", "pg-exp")
    assert shown["config"]["name"] == "pg-exp" and shown["progress"]["complete"] == 5
    for command in (("compare", "pg-exp", "--all-params"), ("pareto", "pg-exp"),
                    ("compare", "pg-exp", "--where", "score>0.4", "--sort", "model_bytes")):
        on_pg, on_sqlite = views(postgres_url, *command), views(sqlite_url, *command)
        if isinstance(on_pg, dict):
            on_pg, on_sqlite = on_pg["trials"], on_sqlite["trials"]
        assert on_pg and _comparable(on_pg) == _comparable(on_sqlite)
    assert len(views(postgres_url, "pareto", "pg-exp")["trials"]) == 5  # score and size rise together
    for kind in ("csv", "json"):
        out = tmp_path / f"trials.{kind}"
        assert main(["export", "pg-exp", "--format", kind, "-o", str(out), "--storage", postgres_url]) == 0
        text = out.read_text()
        assert text.count("\n") >= 5 and "model_bytes" in text

    experiment, rows = open_store(postgres_url).load("pg-exp")  # the bulk SQL path equals Optuna's API
    study = optuna.load_study(study_name="pg-exp", storage=postgres_url)
    assert [r.flat() for r in rows] == [r.flat() for r in rows_from_frozen(study.get_trials(),
                                                                           experiment.objective_names)]

    server, thread = dashboard.start(postgres_url, host="127.0.0.1", port=0)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as response:
            studies = json.loads(response.read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["pg-exp"]
        with urllib.request.urlopen(f"{base}/api/studies/{studies[0]['study_id']}", timeout=30) as response:
            detail = json.loads(response.read())
        assert len(detail["trials"]) == 5
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_resume_after_sigkill_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    write(tmp_path, proposer="random", n_samples=6, random_seed=3,
          script=str(SCRIPTS / "objective.py"),  # trials 0-1 finish, later ones wait for the gate
          runtime_args={"env": {"AUP_TEST_GATE": str(tmp_path / "go"), "AUP_TEST_GATE_FROM": "2"}},
          parameter_config=[{"name": "x", "type": "float", "range": [0.1, 1.0]}])
    process = aup(tmp_path, postgres_url, "experiment.json", "--no-live")

    def states() -> list[TrialState]:
        try:
            study = optuna.load_study(study_name="pg-exp", storage=postgres_url)
        except KeyError:
            return []
        return [t.state for t in study.get_trials(deepcopy=False)]

    wait_for(lambda: states().count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states())
    process.kill()
    process.communicate()
    before = optuna.load_study(study_name="pg-exp", storage=postgres_url).trials
    (tmp_path / "go").touch()
    code, _, err = finish(aup(tmp_path, postgres_url, "resume", "pg-exp", "--no-live"))
    assert code == 0, err
    assert_resumed_after_kill(before, optuna.load_study(study_name="pg-exp", storage=postgres_url).trials, 6)
