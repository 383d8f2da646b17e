"""Kill things at random moments, resume, and count what was lost or repeated or left running.

Every case runs a 12-trial experiment (2 in parallel) whose trials each start a child process
(``sleep 124``) that must never outlive its attempt; afterwards ``aup resume`` runs to the end if the
experiment is not finished. Printed per case: faults injected, runs it took after the faults to
finish (0: the runner that met the faults finished by itself), the last runner's exit code, trials, completed trials, distinct completed
configurations, repeats, lost grid points, trials left RUNNING, processes of any attempt (the
scripts and their children, found by their ``AUP_PROCESS_KEY``) still alive afterwards, and the
reasons of the failed attempts (each re-run).

Cases (``--cases``):

* ``grid``, ``random``, ``tpe``: ``"resource": "cpu"``, SQLite; the runner (``python -m aup``) is
  SIGKILLed ``--kills`` times, each time after 1-3 more trials have started plus up to 0.3 s (one kill
  in five lands during start-up instead), then resumed.
* ``ray-runner``: the grid on ``"resource": "ray"`` (a local Ray cluster started by this script, the
  runners join it by address); the runner is SIGKILLed ``--ray-kills`` times and resumed.
* ``ray-worker``: the same, but the Ray *worker* running a trial is SIGKILLed ``--ray-kills`` times
  (after a random attempt has started plus up to 0.3 s); ``job_retries`` re-runs the attempt.
* ``pg-restart``: the grid on a PostgreSQL store (a throw-away server started by this script); the
  server is restarted (``pg_ctl restart -m immediate``: a crash and recovery) ``--pg-restarts`` times
  while one runner keeps going.

Servers run on 127.0.0.1 only, started the way the tests start them (``tests/fixtures_servers.py``).

    PYTHONPATH=$PWD python benchmarks/fault_injection.py --kills 25 --ray-kills 6 --pg-restarts 6
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fixtures_servers as servers  # noqa: E402  (the tests' server helpers; sets Ray's token auth)
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

TRIAL = """\
import os, subprocess, sys, time, aup
config = aup.BasicConfig().load(sys.argv[1])
child = subprocess.Popen(["sleep", "124"])  # must end with its attempt, however the attempt ends
if os.environ.get("BENCH_WORKER_FILES"):  # the Ray worker running this attempt (the guard's parent)
    with open(f"/proc/{os.getppid()}/stat") as handle:
        worker = int(handle.read().rsplit(")", 1)[1].split()[1])
    with open(sys.argv[1] + ".worker.tmp", "w") as handle:
        handle.write(str(worker))
    os.replace(sys.argv[1] + ".worker.tmp", sys.argv[1] + ".worker")
time.sleep(float(os.environ.get("BENCH_SLEEP", "0.15")))
aup.print_result(float(config["x"]) + float(config["y"]))
"""
GRID = {"proposer": "sequence", "parameter_config": [{"name": "x", "type": "int", "range": [0, 3]},
                                                     {"name": "y", "type": "choice", "range": [0.0, 0.5, 1.0]}]}
SPACES = {
    "grid": GRID,
    "random": {"proposer": "random", "n_samples": 12},
    "tpe": {"proposer": "tpe", "n_samples": 12, "n_startup_trials": 4},
}
GRID_POINTS = {(("x", x), ("y", y)) for x in range(4) for y in (0.0, 0.5, 1.0)}


# ---- one case --------------------------------------------------------------------------------------
class Case:
    """An experiment folder, its store and how to start (or resume) its runner."""

    def __init__(self, folder: Path, url: str, space: dict[str, Any], **overrides: Any) -> None:
        self.folder, self.url = folder, url
        (folder / "trial.py").write_text(TRIAL)
        exp = {"name": "f", "script": "trial.py", "resource": "cpu", "target": "max", "n_parallel": 2,
               "random_seed": 3, "workingdir": str(folder),
               "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]},
                                    {"name": "y", "type": "float", "range": [0, 1]}]}
        exp.update(space)
        exp.update(overrides)
        (folder / "exp.json").write_text(json.dumps(exp))

    def names(self) -> list[str]:
        try:
            return [s.study_name for s in optuna.get_all_study_summaries(self.url)]
        except Exception:  # noqa: BLE001 - no store yet (SQLite file or tables not created)
            return []

    def launch(self) -> subprocess.Popen[bytes]:
        names = self.names()
        args = ["resume", names[0]] if names else ["run", "exp.json"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AUP_STORAGE": self.url}
        return subprocess.Popen([sys.executable, "-m", "aup", *args, "--no-live"], cwd=self.folder, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def started(self) -> int:
        jobs = self.folder / "jobs"
        return len(list(jobs.glob("*.out"))) if jobs.is_dir() else 0

    def finish(self, code: int = 0) -> tuple[int, int]:
        """Resume until the study is finished (at most three times): the last runner's exit code
        (``code``, the one of the runner that saw the faults, when it finished the study itself) and
        how many resumes it took."""
        resumes = 0
        for resumes in range(4):
            names = self.names()
            if resumes == 3 or names and optuna.load_study(study_name=names[0], storage=self.url).user_attrs.get(
                    "status") == "finished":
                break
            code = self.launch().wait()
        return code, resumes

    def count(self, faults: int, finished: tuple[int, int], grid: bool) -> dict[str, Any]:
        trials = optuna.load_study(study_name="f", storage=self.url).get_trials(deepcopy=False)
        complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
        keys = {t.user_attrs["process_key"] for t in trials if "process_key" in t.user_attrs}
        return {"faults": faults, "exit": finished[0], "resumes": finished[1], "trials": len(trials), "complete": len(complete),
                "distinct": len(set(complete)), "repeats": len(complete) - len(set(complete)),
                "lost": len(GRID_POINTS - set(complete)) if grid else 0,
                "left_running": sum(t.state == TrialState.RUNNING for t in trials),
                "alive_after": processes_left(keys),
                "reasons": sorted({_reason(t) for t in trials if t.state == TrialState.FAIL})}


def _reason(trial: Any) -> str:
    """Why a trial failed (a configuration queued and never started when the runner was killed has
    no reason of its own: it is marked interrupted)."""
    reason = trial.user_attrs.get("status_reason") or ("interrupted" if trial.user_attrs.get("interrupted") else "-")
    return str(reason)[:70]


def processes_left(keys: set[str], settle_s: float = 15.0) -> int:
    """Attempt processes still alive; an attempt's group is ended just after its result is handed over
    (a Ray node ends it when the task finishes), so this waits up to ``settle_s`` for them to go."""
    deadline = time.time() + settle_s
    while True:
        alive = trial_processes_alive(keys)
        if not alive or time.time() > deadline:
            for pid in alive:  # what was left, for the record
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:150]
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:3]
                except OSError:
                    continue
                print(f"  left: pid {pid} state/ppid/pgrp {stat}: {command}", file=sys.stderr, flush=True)
            return len(alive)
        time.sleep(0.2)


def trial_processes_alive(keys: set[str]) -> list[int]:
    wanted = {f"AUP_PROCESS_KEY={key}".encode() for key in keys}
    alive = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                if wanted & set(handle.read().split(b"\0")) and not _zombie(entry.name):
                    alive.append(int(entry.name))
        except OSError:
            pass
    return alive


def _zombie(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# ---- faults ----------------------------------------------------------------------------------------
def kill_runner(case: Case, rng: random.Random, kill: int) -> None:
    """SIGKILL the runner after 1-3 more trials have started plus up to 0.3 s (every fifth: during start-up)."""
    process = case.launch()
    if kill % 5 == 2:
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        target, deadline = case.started() + rng.randint(1, 3), time.time() + 120
        while case.started() < target and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_workers(case: Case, rng: random.Random, kills: int) -> tuple[int, int]:
    """One runner; SIGKILL the Ray worker of a freshly started attempt ``kills`` times."""
    process = case.launch()
    seen: set[tuple[str, str]] = set()
    done = 0
    deadline = time.time() + 600
    while done < kills and process.poll() is None and time.time() < deadline:
        markers = {(m.name, m.read_text()) for m in (case.folder / "jobs").glob("*.worker")} - seen \
            if (case.folder / "jobs").is_dir() else set()
        if not markers:
            time.sleep(0.02)
            continue
        name, pid = sorted(markers)[0]
        seen |= markers
        time.sleep(rng.uniform(0.0, 0.3))
        try:
            os.kill(int(pid), signal.SIGKILL)
            done += 1
        except (ProcessLookupError, ValueError):
            pass
    return done, process.wait()


def restart_postgres(case: Case, server: Any, rng: random.Random, restarts: int) -> tuple[int, int]:
    """One runner; restart the server (crash + recovery) ``restarts`` times while it runs."""
    process = case.launch()
    done = 0
    while done < restarts and process.poll() is None:
        target, deadline = case.started() + rng.randint(1, 2), time.time() + 120
        while case.started() < target and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is not None:
            break
        servers._run(server.run_as, [str(server.bindir / "pg_ctl"), "-D", str(server.datadir), "-m", "immediate",
                                     "-l", str(server.datadir.parent / "server.log"), "-w", "-t", "60", "restart"])
        done += 1
    return done, process.wait()


# ---- the cases -------------------------------------------------------------------------------------
def run_local(name: str, kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{name}")
    with tempfile.TemporaryDirectory() as tmp:
        case = Case(Path(tmp), f"sqlite:///{Path(tmp) / '.aup' / 'aup.db'}", SPACES[name])
        for kill in range(kills):
            kill_runner(case, rng, kill)
        return case.count(kills, case.finish(), grid=name == "grid")


def run_ray(name: str, kills: int, seed: int, cluster: Any) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{name}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"BENCH_SLEEP": "0.4", "BENCH_WORKER_FILES": "1"}
        case = Case(Path(tmp), f"sqlite:///{Path(tmp) / '.aup' / 'aup.db'}", GRID, resource="ray",
                    resource_args={"address": cluster.address}, runtime_args={"env": env},
                    job_failure={"job_retries": kills + 1})
        if name == "ray-runner":
            for kill in range(kills):
                kill_runner(case, rng, kill)
            return case.count(kills, case.finish(), grid=True)
        faults, code = kill_workers(case, rng, kills)
        return case.count(faults, case.finish(code), grid=True)


def run_postgres(restarts: int, seed: int, server: Any) -> dict[str, Any]:
    rng = random.Random(f"{seed}-pg")
    with tempfile.TemporaryDirectory() as tmp:
        case = Case(Path(tmp), server.new_database(), GRID, runtime_args={"env": {"BENCH_SLEEP": "0.4"}})
        faults, code = restart_postgres(case, server, rng, restarts)
        return case.count(faults, case.finish(code), grid=True)


def with_server(start: Callable[[], Any], stop: Callable[[Any], None], body: Callable[[Any], dict[str, Any]]
                ) -> dict[str, Any] | str:
    try:
        server = start()
    except servers.ServerUnavailable as exc:
        return f"skipped: {exc}"
    try:
        return body(server)
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25, help="runner SIGKILLs per local case")
    parser.add_argument("--ray-kills", type=int, default=6, help="SIGKILLs per Ray case")
    parser.add_argument("--pg-restarts", type=int, default=6, help="PostgreSQL restarts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", nargs="*", default=[*sorted(SPACES), "ray-runner", "ray-worker", "pg-restart"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{'case':10} {'faults':>6} {'resumes':>7} {'exit':>4} {'trials':>6} {'complete':>8} {'distinct':>8} {'repeats':>7} "
          f"{'lost':>4} {'running':>7} {'alive':>5}", flush=True)
    cluster = None
    try:
        for name in args.cases:
            if name in SPACES:
                row: dict[str, Any] | str = run_local(name, args.kills, args.seed)
            elif name.startswith("ray-"):
                if cluster is None:
                    try:
                        cluster = servers.start_ray()
                    except servers.ServerUnavailable as exc:
                        cluster = str(exc)
                row = f"skipped: {cluster}" if isinstance(cluster, str) else run_ray(name, args.ray_kills,
                                                                                      args.seed, cluster)
            elif name == "pg-restart":
                row = with_server(servers.start_postgres, lambda s: s.stop(),
                                  lambda s: run_postgres(args.pg_restarts, args.seed, s))
            else:
                raise SystemExit(f"unknown case {name!r}")
            print(_line(name, row), flush=True)
    finally:
        if cluster is not None and not isinstance(cluster, str):
            servers.stop_ray(cluster)


def _line(name: str, r: dict[str, Any] | str) -> str:
    if isinstance(r, str):
        return f"{name:10} {r}"
    return (f"{name:10} {r['faults']:>6} {r['resumes']:>7} {r['exit']:>4} {r['trials']:>6} {r['complete']:>8} {r['distinct']:>8} "
            f"{r['repeats']:>7} {r['lost']:>4} {r['left_running']:>7} {r['alive_after']:>5}"
            + (f"   failed, re-run: {'; '.join(r['reasons'])}" if r["reasons"] else ""))


if __name__ == "__main__":
    main()
