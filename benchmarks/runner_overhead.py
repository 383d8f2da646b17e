"""Runner overhead: ``python -m aup`` with N trivial trials vs. running the same script N times by hand.

Both sides run the trial script as separate processes, ``--parallel`` at a time, in the same
temporary directory; "by hand" writes the job configs up front and only starts processes. The
runner side is the whole command (interpreter start, validation, study creation, every DB write,
the end summary), so fixed costs are included, amortised over the trials.

Two figures are printed:
* wall overhead per trial = (runner wall time - by-hand wall time) / N
* slot overhead per trial = wall overhead * parallel: the extra time each trial holds a slot,
  the conservative reading; the budget (DESIGN.md: under 25 ms) is checked against this one.

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


def with_runner(workdir: Path, trials: int, parallel: int) -> float:
    experiment = {
        "name": "overhead", "script": "trial.py", "resource": "cpu", "proposer": "random",
        "target": "max", "n_samples": trials, "n_parallel": parallel,
        "parameter_config": [{"name": "x", "type": "float", "range": [0, 1]}],
    }
    (workdir / "experiment.json").write_text(json.dumps(experiment))
    env = {**os.environ, "AUP_STORAGE": f"sqlite:///{workdir / 'aup.db'}"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "aup", "experiment.json", "--no-live"], cwd=workdir, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the runner failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="alternate both sides this many times")
    args = parser.parse_args()
    hand_times, runner_times = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="aup-overhead-") as tmp:
            workdir = Path(tmp)
            (workdir / "trial.py").write_text(TRIAL_SCRIPT)
            hand_times.append(by_hand(workdir, args.trials, args.parallel))
            runner_times.append(with_runner(workdir, args.trials, args.parallel))
    hand, runner = statistics.median(hand_times), statistics.median(runner_times)
    wall_ms = (runner - hand) / args.trials * 1000
    slot_ms = wall_ms * args.parallel
    print(f"{args.trials} trivial trials, n_parallel {args.parallel}, median of {args.repeat}")
    print(f"  by hand:    {hand:7.2f} s  ({hand / args.trials * 1000:.1f} ms per trial)")
    print(f"  aup runner: {runner:7.2f} s  ({runner / args.trials * 1000:.1f} ms per trial)")
    print(f"  overhead per trial: {wall_ms:.1f} ms wall, {slot_ms:.1f} ms per slot "
          f"(budget {BUDGET_MS:.0f} ms: {'OK' if slot_ms < BUDGET_MS else 'OVER'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
