"""What aup prints for people: storage passwords masked, commands to paste quoted for the shell.

The PostgreSQL URLs here point at a closed port: the connection is refused, and no message about it
may show the password. Runs against a real server are in ``test_postgres.py``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy

from aup import store
from aup.cli import main
from aup.safe_text import hide_secrets, shell_command, shown_url

SCRIPTS = Path(__file__).parent / "scripts"
SECRET = "SECRETpw"
HOSTILE = "r2 $(touch X) '"  # the experiment name: pasting repr() of it runs touch


def closed_port() -> int:
    from fixtures_servers import free_port

    return free_port()


def secret_url(port: int) -> str:
    return f"postgresql+psycopg://user:{SECRET}@127.0.0.1:{port}/db"


def write(folder: Path, **overrides: Any) -> Path:
    exp: dict[str, Any] = {"name": "masked", "script": str(SCRIPTS / "objective.py"), "resource": "cpu",
                           "proposer": "random", "target": "max", "n_samples": 1, "n_parallel": 1,
                           "parameter_config": [{"name": "x", "type": "float", "range": [0.1, 1.0]}]}
    exp.update(overrides)
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


# ---- passwords -----------------------------------------------------------------------------------
def test_shown_url_and_hide_secrets_mask_passwords_in_every_form() -> None:
    assert shown_url(f"postgresql+psycopg://user:{SECRET}@db.example:5432/aup") == \
        "postgresql+psycopg://user:***@db.example:5432/aup"
    assert shown_url("sqlite:////tmp/a b/aup.db") == "sqlite:////tmp/a b/aup.db"  # nothing to hide: unchanged
    assert shown_url("postgresql://u:p%40ss-word@h/db?sslmode=require") == "postgresql://u:***@h/db?sslmode=require"
    assert shown_url("postgresql://u:un@escaped@h/db") == "postgresql://u:***@h/db"  # an "@" in the password
    assert shown_url("postgresql://u:un@escaped@h/db") == "postgresql://u:***@h/db"  # an "@" in the password
    text = hide_secrets(f"host=h password={SECRET} user=u; also mysql://root:{SECRET}x@h/db and 'p@ss-word'")
    assert SECRET not in text and "p@ss-word" not in text and "password=***" in text and "root:***@h" in text
    assert hide_secrets(f"password='{SECRET} with space' port=1") == "password=*** port=1"


@pytest.mark.parametrize("command", [["run", "experiment.json"], ["show", "masked"], ["list"],
                                     ["compare", "masked"], ["resume", "masked"], ["export", "masked"]])
def test_connection_errors_never_show_the_password(command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = main([*command, "--storage", secret_url(closed_port())])
    err = capsys.readouterr()
    assert code == 2, err
    assert SECRET not in err.out + err.err
    assert "user:***@127.0.0.1" in err.err and err.err.startswith("aup: error: cannot open the storage")


def test_a_driver_message_quoting_the_dsn_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A driver may put the connection string in its error (a mistyped password, a bad option)."""
    url = secret_url(5432)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.OperationalError(
            "connect", {}, Exception(f"invalid connection option in 'host=h user=user password={SECRET}' "
                                     f"for {url}"))

    monkeypatch.setattr(store, "patient_storage_class", lambda: refuse)
    write(tmp_path)
    assert main(["run", str(tmp_path / "experiment.json"), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "password=***" in err and "user:***@" in err


def test_environment_url_is_masked_too(tmp_path: Path) -> None:
    env = {**os.environ, "AUP_STORAGE": secret_url(closed_port())}
    done = subprocess.run([sys.executable, "-m", "aup", "show", "masked"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and SECRET not in done.stdout + done.stderr and "***" in done.stderr


# ---- commands to paste ---------------------------------------------------------------------------
def test_shell_command_round_trips_through_bash(tmp_path: Path) -> None:
    printed = shell_command("printf", "%s", HOSTILE)
    done = subprocess.run(["bash", "-c", printed], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout == HOSTILE and not (tmp_path / "X").exists()


@pytest.mark.slow  # a subprocess or timed waits; still in CI (fast suite budget)
def test_printed_show_and_resume_commands_are_shell_quoted(tmp_path: Path) -> None:
    """A run with the hostile name, interrupted: both printed commands give back the exact name."""
    gate = tmp_path / "never"
    write(tmp_path, name=HOSTILE, n_samples=2, runtime_args={"env": {"AUP_TEST_GATE": str(gate)}})
    env = {**os.environ, "AUP_STORAGE": f"sqlite:///{tmp_path / 'aup.db'}"}
    process = subprocess.Popen([sys.executable, "-m", "aup", "run", "experiment.json", "--no-live"], cwd=tmp_path,
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_running(tmp_path / "aup.db", HOSTILE)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, out + err
    [resume] = [line for line in out.splitlines() if "continue with: " in line]
    [results] = [line for line in out.splitlines() if line.startswith("results: ")]
    assert _argument(resume.split("continue with: ", 1)[1], 2, tmp_path) == HOSTILE
    assert _argument(results.split("(see: ", 1)[1].rstrip()[:-1], 2, tmp_path) == HOSTILE
    gate.touch()
    done = subprocess.run([sys.executable, "-m", "aup", "resume", HOSTILE, "--no-live"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "X").exists()


def _argument(command: str, index: int, tmp_path: Path) -> str:
    """Argument ``index`` (1-based, after ``aup``) that bash passes when ``command`` is pasted."""
    done = subprocess.run(["bash", "-c", f'aup() {{ printf "%s" "${{{index}}}"; }}\n{command}'], cwd=tmp_path,
                          capture_output=True, text=True, check=True)
    assert not (tmp_path / "X").exists(), "pasting the printed command ran the name's $(...)"
    return done.stdout


def _wait_for_running(db: Path, name: str) -> None:
    import time

    from optuna.trial import TrialState

    deadline = time.time() + 120
    while time.time() < deadline:
        if db.exists():
            try:
                study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
                if any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
                    return
            except KeyError:
                pass
        time.sleep(0.05)
    raise AssertionError("no trial started")
