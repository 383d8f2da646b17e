"""Budget check: ``aup list`` and ``aup compare`` over a store of 1,000 trials answer in under 1 s.

Creates (once, cached under ``--dir``) a SQLite store with one experiment of 1,000 realistic
compression trials (``aup.views.synthetic``), then times the real command lines end to end in
fresh processes (interpreter start, imports, query, rendering), best of ``--repeat`` runs, as a
user would see them. Prints one line per command and exits 1 if any is over budget.

    python benchmarks/views_speed.py [--dir /tmp/aup-views-bench] [--trials 1000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 1.0
COMMANDS = {
    "list": ["list"],
    "list --json": ["list", "--json"],
    "compare": ["compare", "bench"],
    "compare --sort model_bytes --where score>0.95": ["compare", "bench", "--sort", "model_bytes", "--where",
                                                       "score>0.95"],
    "compare --json (all trials)": ["compare", "bench", "--json"],
    "compare --limit 0 (all trials as a table)": ["compare", "bench", "--limit", "0"],
}
BUDGETED = {"list", "list --json", "compare", "compare --sort model_bytes --where score>0.95",
            "compare --json (all trials)"}


def make(folder: Path, trials: int) -> str:
    url = f"sqlite:///{folder / 'aup.db'}"
    marker = folder / f"ready-{trials}"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "aup.db").unlink(missing_ok=True)
        from aup.store import open_storage
        from aup.views.synthetic import make_store

        start = time.perf_counter()
        make_store(open_storage(url), "bench", n_trials=trials)
        marker.touch()
        print(f"created {trials} trials in {time.perf_counter() - start:.1f} s at {url}")
    return url


def time_command(url: str, args: list[str], repeat: int) -> float:
    env = {**os.environ, "AUP_STORAGE": url}
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "aup", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"aup {' '.join(args)} failed: {done.stderr.strip()}")
        best = min(best, elapsed)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/aup-views-bench"))
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = make(args.dir, args.trials)
    over = []
    for label, command in COMMANDS.items():
        seconds = time_command(url, command, args.repeat)
        budget = f"budget {BUDGET_S:.1f} s" if label in BUDGETED else "no budget"
        flag = "OVER" if label in BUDGETED and seconds > BUDGET_S else "ok"
        print(f"aup {label:<48} {seconds:6.3f} s  ({budget}) {flag}")
        if flag == "OVER":
            over.append(label)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
