"""Runner overhead: ``python -m aup`` with N trivial trials vs. running the same script N times by hand.

Both sides run the trial script as separate processes, ``--parallel`` at a time, in the same
temporary directory; "by hand" writes the job configs up front and only starts processes. The
runner side is the whole command (interpreter start, validation, study creation, every DB write,
the end summary), so fixed costs are included, amortised over the trials.

A third side is a bare hand-written Optuna loop doing the same subprocess trials (random sampler,
SQLite storage, ask -> write config -> start process, ``parallel`` at a time, parse the
``#Auptimizer:`` line, tell): the runner should cost no more than that. Reported as the ratio of
the two overheads above by-hand (and of the wall times), measured in the same run.

Figures printed:
* overhead per trial = (runner wall time - by-hand wall time) / N, the budget of docs/design.md (under
  25 ms); also shown times ``parallel`` (extra time each trial holds a slot, a stricter reading);
* the runner process's own CPU time per trial (from /proc), which does not depend on how busy the
  machine is, unlike the wall times on a shared machine.

Usage: python benchmarks/runner_overhead.py [--trials 100] [--parallel 2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_MS = 25.0
_DB_CREATION: list[float] = []
TRIAL_SCRIPT = """\
import sys
import aup
config = aup.BasicConfig().load(sys.argv[1])
aup.print_result(config["x"])
"""


def by_hand(workdir: Path, trials: int, parallel: int) -> float:
    """Run the script ``trials`` times, ``parallel`` at a time, with pre-written job configs."""
    configs = []
    (workdir / "hand").mkdir()
    for i in range(trials):
        path = workdir / "hand" / f"{i}.json"
        path.write_text(json.dumps({"x": i / trials}))
        configs.append(path)
    start = time.perf_counter()
    running: list[subprocess.Popen] = []
    for path in configs:
        while len(running) >= parallel:
            running = [p for p in running if p.poll() is None]
            if len(running) >= parallel:
                time.sleep(0.002)
        with open(path.with_suffix(".out"), "wb") as log:
            running.append(subprocess.Popen([sys.executable, "trial.py", str(path)], cwd=workdir,
                                            stdout=log, stderr=subprocess.STDOUT))
    for process in running:
        process.wait()
    return time.perf_counter() - start


def with_runner(workdir: Path, trials: int, parallel: int) -> tuple[float, float]:
    experiment = {
        "name": "overhead", "script": "trial.py", "resource": "cpu", "proposer": "random",
        "target": "max", "n_samples": trials, "n_parallel": parallel,
        "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}],
    }
    (workdir / "experiment.json").write_text(json.dumps(experiment))
    url = f"sqlite:///{workdir / 'aup.db'}"
    env = {**os.environ, "AUP_STORAGE": url}
    created = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"from aup.store import open_storage; open_storage({url!r})"], check=True)
    _DB_CREATION.append(time.perf_counter() - created)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "aup", "experiment.json", "--no-live"], cwd=workdir,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cpu = 0.0
    while process.poll() is None:
        cpu = _own_cpu_seconds(process.pid) or cpu
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"the runner failed ({process.returncode}):\n{process.stderr.read()}")
    return elapsed, cpu


def bare_optuna(workdir: Path, trials: int, parallel: int) -> float:
    """A minimal hand-written Optuna ask/tell loop over the same subprocess trials."""
    start = time.perf_counter()
    code = f"""
import json, subprocess, sys, time, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage="sqlite:///{workdir / 'optuna.db'}", direction="maximize",
                            sampler=optuna.samplers.RandomSampler(seed=0))
(folder := __import__("pathlib").Path("{workdir / 'optuna'}")).mkdir()
running = []
def finish(item):
    trial, proc, out = item
    proc.wait()
    lines = [l for l in out.read_text().splitlines() if l.startswith("#Auptimizer:")]
    study.tell(trial, float(lines[-1].split(":", 1)[1]))
for i in range({trials}):
    while len(running) >= {parallel}:
        done = [r for r in running if r[1].poll() is not None]
        for r in done:
            finish(r)
            running.remove(r)
        if len(running) >= {parallel}:
            time.sleep(0.002)
    trial = study.ask({{"x": optuna.distributions.FloatDistribution(0, 1)}})
    config = folder / f"{{i}}.json"
    config.write_text(json.dumps(trial.params))
    out = folder / f"{{i}}.out"
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "trial.py", str(config)], cwd="{workdir}", stdout=log,
                                stderr=subprocess.STDOUT)
    running.append((trial, proc, out))
for r in running:
    finish(r)
"""
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True)
    return time.perf_counter() - start


def _own_cpu_seconds(pid: int) -> float | None:
    """CPU time of the runner process itself (utime + stime, children excluded), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate both sides this many times")
    args = parser.parse_args()
    hand_times, runner_times, runner_cpu, optuna_times = [], [], [], []
    for _ in range(args.repeat):  # interleaved, so a load change on a shared machine hits both sides
        with tempfile.TemporaryDirectory(prefix="aup-overhead-") as tmp:
            workdir = Path(tmp)
            (workdir / "trial.py").write_text(TRIAL_SCRIPT)
            hand_times.append(by_hand(workdir, args.trials, args.parallel))
            elapsed, cpu = with_runner(workdir, args.trials, args.parallel)
            runner_times.append(elapsed)
            runner_cpu.append(cpu)
            optuna_times.append(bare_optuna(workdir, args.trials, args.parallel))
    overheads = [(r - h) / args.trials * 1000 for r, h in zip(runner_times, hand_times)]
    hand, runner = statistics.median(hand_times), statistics.median(runner_times)
    wall_ms = statistics.median(overheads)
    cpu_ms = statistics.median(runner_cpu) / args.trials * 1000
    print(f"{args.trials} trivial trials, n_parallel {args.parallel}, median of {args.repeat} interleaved runs")
    print(f"  by hand:    {hand:7.2f} s  ({hand / args.trials * 1000:.1f} ms per trial)")
    print(f"  aup runner: {runner:7.2f} s  ({runner / args.trials * 1000:.1f} ms per trial)")
    print(f"  (one-time, not counted: creating the results database took {statistics.median(_DB_CREATION):.2f} s,"
          " including interpreter start; it happens on the first run in a directory only)")
    print(f"  runner process CPU: {cpu_ms:.1f} ms per trial (start-up, validation and DB writes included)")
    bare = statistics.median(optuna_times)
    bare_ms = statistics.median((o - h) / args.trials * 1000 for o, h in zip(optuna_times, hand_times))
    print(f"  bare Optuna loop: {bare:5.2f} s  ({bare / args.trials * 1000:.1f} ms per trial; overhead "
          f"{bare_ms:.1f} ms per trial above by hand)")
    print(f"  runner / bare Optuna: wall {runner / bare:.2f}x, overhead above by hand "
          f"{wall_ms / bare_ms if bare_ms > 0 else float('inf'):.2f}x (target <= 1.0)")
    print(f"  overhead per trial: {wall_ms:.1f} ms wall (budget {BUDGET_MS:.0f} ms: "
          f"{'OK' if wall_ms < BUDGET_MS else 'OVER'}); {wall_ms * args.parallel:.1f} ms of slot time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
