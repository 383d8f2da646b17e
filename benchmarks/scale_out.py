"""Scale-out figures in one run, as ratios measured side by side (interleaved rounds, medians).

1. Trials per minute, 1 runner vs 2 runners on one study (``aup run`` + ``aup worker``), in a real
   PostgreSQL server; every runner runs one trial at a time.
2. Trials per minute, ``"resource": "cpu"`` vs ``"resource": "ray"`` (a local Ray cluster started by
   this script; the runner joins it by address), ``n_parallel`` 2, SQLite store.
3. The results store's cost per trial as the runner pays it (ask, the bulk attribute write, tell)
   for SQLite (WAL), PostgreSQL with its defaults and PostgreSQL with ``synchronous_commit=off``.

Each trial sleeps ``--sleep`` seconds (work that does not compete for this machine's 2 cores, like
a trial on another node would not); wall times include starting ``python -m aup``, validation,
connecting to Ray and the end summary. Servers run on 127.0.0.1 only, started the way the tests
start them (``tests/fixtures_servers.py``).

Usage: python benchmarks/scale_out.py [--trials 16] [--sleep 2] [--rounds 2] [--store-trials 40]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import fixtures_servers as servers  # noqa: E402  (the tests' server helpers)

TRIAL = """\
import os
import time
import aup


@aup.aup_args
def main(x, **_):
    time.sleep(float(os.environ["BENCH_SLEEP"]))
    aup.log_metrics(model_bytes=int(1000 * x) + 1, accuracy=x)
    return x


if __name__ == "__main__":
    main()
"""


def experiment(folder: Path, name: str, trials: int, sleep: float, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.py").write_text(TRIAL)
    exp = {"name": name, "script": "trial.py", "resource": "cpu", "proposer": "random", "target": "max",
           "n_samples": trials, "n_parallel": 1, "workingdir": str(folder),
           "runtime_args": {"env": {"BENCH_SLEEP": str(sleep)}},
           "parameter_config": [{"name": "x", "type": "float", "range": [0.0, 1.0]}], **overrides}
    path = folder / "experiment.json"
    path.write_text(json.dumps(exp))
    return path


def launch(folder: Path, url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "AUP_STORAGE": url, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "aup", *args, "--no-live"], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        _, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise SystemExit(f"a runner failed: {err.strip().splitlines()[-1] if err.strip() else process.returncode}")


def study_running(url: str, name: str) -> bool:
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=url).user_attrs.get("status") == "running"
    except KeyError:
        return False


def runners(base: Path, url: str, trials: int, sleep: float, count: int, tag: str) -> float:
    """Wall seconds for ``count`` runners (the first ``aup run``, the others ``aup worker``) to finish."""
    name = f"bench-{tag}"
    experiment(base / tag, name, trials, sleep)
    start = time.perf_counter()
    processes = [launch(base / tag, url, "experiment.json")]
    if count > 1:
        deadline = time.time() + 120
        while not study_running(url, name) and time.time() < deadline:
            time.sleep(0.05)
        processes += [launch(base / tag, url, "worker", name) for _ in range(count - 1)]
    wait_all(processes)
    return time.perf_counter() - start


def resource_run(base: Path, trials: int, sleep: float, resource: str, tag: str, address: str | None) -> float:
    extra: dict[str, object] = {"resource": resource, "n_parallel": 2}
    if resource == "ray":
        extra["resource_args"] = {"address": address}
    experiment(base / tag, f"bench-{tag}", trials, sleep, **extra)
    start = time.perf_counter()
    wait_all([launch(base / tag, f"sqlite:///{base / tag / 'aup.db'}", "experiment.json")])
    return time.perf_counter() - start


def store_cost(url: str, trials: int) -> float:
    """Median ms per trial of the runner's store calls: ask + suggest, bulk attributes, tell."""
    import optuna

    from aup import store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = store.open_storage(url)
    study = store.create_experiment_study(storage, store.unique_study_name(storage, "cost"), ["maximize"],
                                          sampler=optuna.samplers.RandomSampler(seed=0))
    times = []
    for i in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        store.set_trial_user_attrs(study, trial, {"job_config": {"x": x}, "job_config_path": f"/j/{i}.json",
                                                  "log_path": f"/j/{i}.out"})
        store.set_trial_user_attrs(study, trial, {"score": x, "accuracy": x, "model_bytes": 1000,
                                                  "attempts": [{"number": 0, "exit_code": 0}]})
        study.tell(trial, x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def interleaved(rounds: int, cases: dict[str, Callable[[int], float]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {key: [] for key in cases}
    for index in range(rounds):
        for key, run in cases.items():
            samples[key].append(run(index))
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store-trials", type=int, default=40)
    args = parser.parse_args()

    pg = servers.start_postgres({"fsync": "on"})  # the tests turn fsync off; a real server has it on
    ray_cluster = servers.start_ray(num_cpus=2)
    base = Path(tempfile.mkdtemp(prefix="aup-scale-"))
    try:
        def pg_db(_: int) -> str:
            return pg.new_database()

        walls = interleaved(args.rounds, {
            "1 runner": lambda i: runners(base, pg_db(i), args.trials, args.sleep, 1, f"one-{i}"),
            "2 runners": lambda i: runners(base, pg_db(i), args.trials, args.sleep, 2, f"two-{i}"),
            "cpu": lambda i: resource_run(base, args.trials, args.sleep, "cpu", f"cpu-{i}", None),
            "ray": lambda i: resource_run(base, args.trials, args.sleep, "ray", f"ray-{i}", ray_cluster.address),
        })
        costs = interleaved(args.rounds, {
            "sqlite": lambda i: store_cost(f"sqlite:///{base / f'cost-{i}.db'}", args.store_trials),
            "postgresql": lambda i: store_cost(pg.new_database(), args.store_trials),
            "postgresql, synchronous_commit=off": lambda i: store_cost(
                pg.new_database() + "?options=-c%20synchronous_commit%3Doff", args.store_trials),
        })
    finally:
        servers.stop_ray(ray_cluster)
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)
    per_minute = {key: args.trials / wall * 60 for key, wall in walls.items()}
    print(f"{args.trials} trials of {args.sleep:g} s each, median of {args.rounds} interleaved rounds")
    for key, rate in per_minute.items():
        print(f"  {key:<10} {rate:6.1f} trials/min")
    print(f"  2 runners / 1 runner (one trial at a time each, PostgreSQL): "
          f"{per_minute['2 runners'] / per_minute['1 runner']:.2f}x trials/min")
    print(f"  ray / cpu (n_parallel 2, SQLite): {per_minute['ray'] / per_minute['cpu']:.2f}x trials/min")
    print(f"store cost per trial (ask, 2 bulk attribute writes, tell; median of {args.store_trials}):")
    for key, ms in costs.items():
        print(f"  {key:<36} {ms:6.1f} ms  ({ms / costs['sqlite']:.2f}x SQLite)")


if __name__ == "__main__":
    main()
