"""Kill the runner at random moments, resume, and count what was lost or repeated.

For each proposer, ``python -m aup`` runs a 12-trial experiment (2 in parallel) and is SIGKILLed
``--kills`` times, each time after 1-3 more trials have started plus up to 0.3 s (one kill in five
lands during start-up instead); after every kill ``aup resume`` continues, and a last resume runs to
the end. Printed per proposer: kills survived, completed trials, distinct completed configurations,
repeats, lost grid points, trials left RUNNING and trial processes still alive afterwards.

    PYTHONPATH=$PWD python benchmarks/fault_injection.py --kills 25
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

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
TRIAL = """\
import os, sys, time, aup
config = aup.BasicConfig().load(sys.argv[1])
time.sleep(0.15)
aup.print_result(float(config["x"]) + float(config["y"]))
"""
SPACES = {
    "grid": {"proposer": "sequence", "parameter_config": [{"name": "x", "type": "int", "range": [0, 3]},
                                                         {"name": "y", "type": "choice", "range": [0.0, 0.5, 1.0]}]},
    "random": {"proposer": "random", "n_samples": 12},
    "tpe": {"proposer": "tpe", "n_samples": 12, "n_startup_trials": 4},
}


def started(folder: Path) -> int:
    return len(list((folder / "jobs").glob("*.out"))) if (folder / "jobs").is_dir() else 0


def launch(folder: Path) -> subprocess.Popen[bytes]:
    db = folder / ".aup" / "aup.db"
    names = [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")] if db.exists() else []
    args = ["resume", names[0]] if names else ["run", "exp.json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AUP_STORAGE", None)
    return subprocess.Popen([sys.executable, "-m", "aup", *args, "--no-live"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def trial_processes_alive(keys: set[str]) -> int:
    wanted = {f"AUP_PROCESS_KEY={key}".encode() for key in keys}
    alive = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as handle:
                    alive += bool(wanted & set(handle.read().split(b"\0")))
            except OSError:
                pass
    return alive


def run_case(name: str, kills: int, seed: int) -> dict[str, int]:
    rng = random.Random(f"{seed}-{name}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "trial.py").write_text(TRIAL)
        exp = {"name": "f", "script": "trial.py", "resource": "cpu", "target": "max", "n_parallel": 2,
               "random_seed": 3, "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]},
                                                      {"name": "y", "type": "float", "range": [0, 1]}]}
        exp.update(SPACES[name])
        (folder / "exp.json").write_text(json.dumps(exp))
        for kill in range(kills):
            process = launch(folder)
            if kill % 5 == 2:
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                target, deadline = started(folder) + rng.randint(1, 3), time.time() + 60
                while started(folder) < target and process.poll() is None and time.time() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
        code = launch(folder).wait()
        study = optuna.load_study(study_name="f", storage=f"sqlite:///{folder / '.aup' / 'aup.db'}")
        trials = study.get_trials(deepcopy=False)
        complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
        grid = {(("x", x), ("y", y)) for x in range(4) for y in (0.0, 0.5, 1.0)} if name == "grid" else set()
        keys = {t.user_attrs["process_key"] for t in trials if "process_key" in t.user_attrs}
        return {"kills": kills, "exit": code, "trials": len(trials), "complete": len(complete),
                "distinct": len(set(complete)), "repeats": len(complete) - len(set(complete)),
                "lost": len(grid - set(complete)), "left_running": sum(t.state == TrialState.RUNNING for t in trials),
                "alive_after": trial_processes_alive(keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proposers", nargs="*", default=sorted(SPACES))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{'proposer':9} {'kills':>5} {'exit':>4} {'trials':>6} {'complete':>8} {'distinct':>8} {'repeats':>7} "
          f"{'lost':>4} {'running':>7} {'alive':>5}")
    for name in args.proposers:
        r = run_case(name, args.kills, args.seed)
        print(f"{name:9} {r['kills']:>5} {r['exit']:>4} {r['trials']:>6} {r['complete']:>8} {r['distinct']:>8} "
              f"{r['repeats']:>7} {r['lost']:>4} {r['left_running']:>7} {r['alive_after']:>5}")


if __name__ == "__main__":
    main()
