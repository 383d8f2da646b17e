"""How fast each search finds the accuracy / size front of a compressed CNN (issue 22).

The space has 8 dimensions: the pruner (``l1_filter``, ``fpgm``, ``taylor_fo_weight_filter``), one
sparsity per conv of a six-conv CNN on scikit-learn's 8x8 digits, and the fine-tuning learning rate.
The objectives are validation accuracy (max) and deployed bytes (min: the shrunk model's artifact,
measured by aup's ``measure_model``). Every setting (proposer x multi-objective early stopping [x
per-layer allocation when aup has it]) runs ``--seeds`` seeds x ``--trials`` trials, in one run,
interleaved seed by seed, in this process: aup's sampler builders, its early-stopping policy object
(:class:`aup.proposer_ext.ParetoHalving`, on the same optuna study API the runner uses), real
compressors from ``aup.compression.create_compressor`` with ``apply_speedup``, and real fine-tuning
(``--epochs`` per trial, the rung check after each).

A trial's outcome depends only on its configuration (its training seed is derived from it), so a
configuration drawn by two settings is computed once (cached epoch by epoch); the epochs a setting
*spends* are counted as if it had computed them itself.

Reported per setting (median over seeds, the number of seeds that got there in brackets):

* ``epochs to 98%`` (and 95 %): fine-tuning epochs spent until the front of the completed trials
  reaches 98 % of the hypervolume of the best front known from all runs of all settings (with the
  trials it took; "-" when fewer than half the seeds got there);
* ``HV @10/20/40 trials``: that share after the first 10, 20, 40 trials (stopped ones included in
  the count, only completed ones on the front);
* ``HV @30/60/120 epochs``: that share once a quarter, half, all of the epochs of 40 full trials are
  spent. A setting with early stopping keeps drawing trials until it has spent those epochs (at
  most 3 x ``--trials`` trials): stopping early is worth what the saved epochs buy.

Hypervolume is over (1 - accuracy, bytes / dense bytes), both minimised, with the reference point
(0.2, 1.0): a model below 80 % accuracy or larger than the dense one adds nothing.

    python benchmarks/search_efficiency.py                      # 3 seeds x 40 trials, all settings
    python benchmarks/search_efficiency.py --seeds 1 --trials 12 --proposers random tpe   # a smoke run
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import aup  # noqa: E402
from aup.compression.torch.measure import measure_model  # noqa: E402
from aup.proposer_ext import ParetoHalving, build_sampler  # noqa: E402
from aup.proposer_ext.pareto_halving import hypervolume  # noqa: E402

from aup.compression.allocation import JOB_KEY as ALLOCATION_KEY  # noqa: E402
from aup.compression.allocation import DEFAULT_SEEDS, PROFILE_ATTR, Allocation  # noqa: E402
from aup.compression.torch.allocation import criterion_for, sensitivity_profile  # noqa: E402
from aup.runner.jobconfig import Plan  # noqa: E402
from aup.runner.seeding import seed_trials  # noqa: E402

PRUNERS = ("l1_filter", "fpgm", "taylor_fo_weight_filter")
CONVS = tuple(f"conv{i}" for i in range(1, 7))
DIRECTIONS = ["maximize", "minimize"]
REFERENCE = (0.2, 1.0)  # (1 - accuracy, bytes / dense bytes)
BUDGETS = (10, 20, 40)
TARGET_SHARES = (0.98, 0.95, 0.90)  # the target, and lower ones that tell the settings apart
ALLOCATIONS = ("", "allocation", "seeds")  # none; one global sparsity split by sensitivity; seeded per-layer
RESEEDS = 3  # fresh training seeds for the noise ceiling


class SixConvCNN(nn.Module):
    """Six 3x3 conv-bn-relu blocks (pooling after the 2nd and 4th) and one linear layer, for 1x8x8 digits."""

    def __init__(self, widths: tuple[int, ...] = (16, 16, 32, 32, 48, 48)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, width in enumerate(widths, 1):
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i in (2, 4):
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 10)
        # readable names for config_list op_names: conv1..conv6
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        self._conv_names = {id(m): f"conv{i}" for i, m in enumerate(convs, 1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def conv_op_names(model: nn.Module) -> dict[str, str]:
    """``{"conv1": "features.0", ...}``: the module name of each conv, in order."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {f"conv{i}": name for i, name in enumerate(names, 1)}


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def load_digits() -> Data:
    from sklearn.datasets import load_digits as digits
    from sklearn.model_selection import train_test_split

    x, y = digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return Data(torch.tensor(x_tr), torch.tensor(y_tr), torch.tensor(x_va), torch.tensor(y_va))


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Data, generator: torch.Generator,
                batch: int = 64, pruner: Any = None) -> None:
    model.train()
    order = torch.randperm(len(data.x_train), generator=generator)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        optimizer.step()
        if pruner is not None:
            pruner.step()


@torch.no_grad()
def accuracy(model: nn.Module, data: Data) -> float:
    model.eval()
    return float((model(data.x_val).argmax(1) == data.y_val).float().mean())


def pretrain(data: Data, epochs: int = 20) -> tuple[nn.Module, float, float]:
    """The dense model every trial starts from, its accuracy and its measured bytes."""
    torch.manual_seed(0)
    model = SixConvCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, optimizer, data, generator)
    dense_bytes = measure_model(model, data.x_val[:1], latency=False)["model_bytes"]
    return model, accuracy(model, data), dense_bytes


# ---------------------------------------------------------------------------------------- trials
@dataclass
class Curve:
    """One configuration's fine-tuning, computed epoch by epoch on demand and shared by settings."""

    bytes: float
    accuracies: list[float] = field(default_factory=list)
    state: Any = None  # (model, optimizer, generator) to continue from


class Trials:
    """Runs configurations (pruner, per-conv sparsities, lr) on the pretrained model, with a cache."""

    def __init__(self, dense: nn.Module, data: Data, epochs: int, salt: str = "") -> None:
        """``salt``: part of every configuration's training seed (another salt: fresh seeds, same configs)."""
        self.dense, self.data, self.epochs, self.salt = dense, data, epochs, salt
        self.cache: dict[str, Curve] = {}
        self.computed_epochs = 0

    @staticmethod
    def key(params: dict[str, Any]) -> str:
        return json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(params.items())})

    def curve(self, params: dict[str, Any]) -> Curve:
        key = self.key(params)
        if key not in self.cache:
            self.cache[key] = self._compress(params, key)
        return self.cache[key]

    def accuracy_after(self, params: dict[str, Any], epoch: int) -> float:
        curve = self.curve(params)
        while len(curve.accuracies) < epoch:
            model, optimizer, generator = curve.state
            train_epoch(model, optimizer, self.data, generator)
            curve.accuracies.append(accuracy(model, self.data))
            self.computed_epochs += 1
            if len(curve.accuracies) == self.epochs:
                curve.state = None
        return curve.accuracies[epoch - 1]

    def _compress(self, params: dict[str, Any], key: str) -> Curve:
        seed = int(hashlib.sha256((key + self.salt).encode()).hexdigest()[:8], 16)
        torch.manual_seed(seed)
        model = copy.deepcopy(self.dense)
        names = conv_op_names(model)
        job: dict[str, Any] = {"compression_framework": "torch", "compression_type": "pruning",
                               "compressor": params["pruner"]}
        if "global_sparsity" in params:  # per-layer allocation: one global value split by sensitivity
            job["config_list"] = [{"sparsity": params["global_sparsity"], "op_names": list(names.values()),
                                   "op_types": ["Conv2d"]}]
            job[ALLOCATION_KEY] = "sensitivity"
        else:
            job["config_list"] = [{"sparsity": params[f"sparsity_{c}"], "op_names": [names[c]],
                                   "op_types": ["Conv2d"]} for c in CONVS if params[f"sparsity_{c}"] > 0]
        lr = params["lr"]
        generator = torch.Generator().manual_seed(seed)
        example = self.data.x_val[:1]
        if job["config_list"]:
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            # a real batch: the sensitivity profile measures the output change on it (computed once)
            batch = self.data.x_train[:64]
            pruner = aup.compression.create_compressor(model, job, optimizer=optimizer, dummy_input=batch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruner.compress()
                if not pruner.masks_calculated:  # taylor: gradients of a few batches rank the filters
                    idx = torch.randperm(len(self.data.x_train), generator=generator)[:64]
                    optimizer.zero_grad()
                    nn.functional.cross_entropy(model(self.data.x_train[idx]), self.data.y_train[idx]).backward()
                    optimizer.step()
                pruner.apply_speedup(example)
        size = measure_model(model, example, latency=False)["model_bytes"]
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        return Curve(size, state=(model, optimizer, generator))


# ---------------------------------------------------------------------------------------- search
@dataclass
class Run:
    """One setting's run for one seed: per trial, its final point (or None if stopped) and epochs."""

    points: list[tuple[float, float] | None] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # each trial's configuration (Trials.key)


def suggest(trial: optuna.Trial, allocation: bool) -> dict[str, Any]:
    """8 dimensions (pruner, 6 sparsities, lr), or 3 with allocation (pruner, global sparsity, lr)."""
    params: dict[str, Any] = {"pruner": trial.suggest_categorical("pruner", PRUNERS)}
    if allocation:
        params["global_sparsity"] = trial.suggest_float("global_sparsity", 0.05, 0.9)
    else:
        for conv in CONVS:
            params[f"sparsity_{conv}"] = trial.suggest_float(f"sparsity_{conv}", 0.0, 0.9)
    params["lr"] = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return params


@dataclass
class SeedPlan:
    """What aup's seed mode needs (``"allocation": {"method": "sensitivity", "mode": "seed"}``): the
    stage's plan and the first trial's reported profile, for :func:`aup.runner.seeding.seed_trials`."""

    plan: Plan
    reported: list[optuna.trial.FrozenTrial]


def allocation_seed_plan(dense: nn.Module, data: Data, count: int = DEFAULT_SEEDS) -> SeedPlan:
    """The seed mode's plan over the six per-conv dimensions ([0, 0.9]) and the profile the first trial
    of a run would report (l1 criterion, output change on a training batch)."""
    allocation = Allocation("sensitivity", 0.9, "seed", count)
    model = copy.deepcopy(dense)
    names = conv_op_names(model)
    modules = dict(model.named_modules())
    layers = list(names.values())
    profile = sensitivity_profile(model, layers, criterion_for("l1_filter"), allocation, data.x_train[:64])
    sizes = {layer: int(modules[layer].weight.numel()) for layer in layers}
    curves = {layer: {str(s): d for s, d in curve.items()} for layer, curve in profile.items()}
    reported = optuna.trial.create_trial(values=[0.0, 0.0], user_attrs={PROFILE_ATTR: {"sizes": sizes,
                                                                                      "curves": curves}})
    dims = [(f"sparsity_{conv}", names[conv], 0.0, 0.9) for conv in CONVS]
    return SeedPlan([(allocation, dims)], [reported])


@dataclass(frozen=True)
class Setting:
    proposer: str
    early_stop: bool = False
    allocation: str = ""  # one of ALLOCATIONS
    trials: int | None = None  # more trials than the others (random's long run: the epochs it needs)

    @property
    def name(self) -> str:
        return (self.proposer + (" + early stop" if self.early_stop else "")
                + (f" + {self.allocation}" if self.allocation else "")
                + (f" ({self.trials} trials)" if self.trials else ""))


def search(setting: Setting, seed: int, n_trials: int, trials: Trials, dense_bytes: float,
           seeds: SeedPlan) -> Run:
    """``n_trials`` trials; with early stopping, more until it spent the epochs of ``n_trials`` full trials
    (at most 3 x ``n_trials``), so that settings compare at the same epoch budget too."""
    n_trials = setting.trials or n_trials
    name, _, variant = setting.proposer.partition("-")  # "tpe-mv": multivariate TPE (a tried variant)
    sampler = build_sampler(name, {"multivariate": True} if variant == "mv" else {}, seed, 2)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    if setting.allocation == "seeds":  # the runner's own seeding: the sampler fills pruner and lr
        seed_trials(study, seeds.plan, seeds.reported)
    policy = ParetoHalving([True, False], min_steps=1, reduction_factor=3, max_steps=trials.epochs) \
        if setting.early_stop else None
    run = Run()
    epoch_budget = n_trials * trials.epochs
    while len(run.points) < n_trials or (setting.early_stop and sum(run.epochs) < epoch_budget
                                         and len(run.points) < 3 * n_trials):
        trial = study.ask()
        params = suggest(trial, setting.allocation == "allocation")
        size = trials.curve(params).bytes
        stopped, spent = False, 0
        for epoch in range(1, trials.epochs + 1):
            value = trials.accuracy_after(params, epoch)
            spent = epoch
            if policy is not None and policy.observe(study, trial, epoch, [value, size]).stop:
                stopped = True
                break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            run.points.append(None)
        else:
            study.tell(trial, [value, size])
            run.points.append((1.0 - value, size / dense_bytes))
        run.epochs.append(spent)
        run.keys.append(trials.key(params))
    return run


def noise_ceiling(trials: Trials, best_keys: list[str], dense_bytes: float, best: float) -> list[float]:
    """The best known front's own configurations trained again with fresh seeds: the hypervolume share an
    oracle that proposed exactly them would get. The front is a maximum over every configuration run,
    so part of it is luck (a lucky fine-tuning, one validation digit more); this says how much."""
    shares = []
    for reseed in range(RESEEDS):
        fresh = Trials(trials.dense, trials.data, trials.epochs, salt=f"#reseed{reseed}")
        configurations = [json.loads(key) for key in best_keys]
        points = [(1.0 - fresh.accuracy_after(params, trials.epochs), fresh.curve(params).bytes / dense_bytes)
                  for params in configurations]
        shares.append(front_hv(points) / best)
    return shares


def front_hv(points: list[tuple[float, float] | None]) -> float:
    return hypervolume([p for p in points if p is not None], REFERENCE)


def first_reaching(run: Run, target: float) -> tuple[int, int] | None:
    """(epochs spent, trials) when the run's front first reaches ``target`` hypervolume, or None."""
    for k in range(1, len(run.points) + 1):
        if run.points[k - 1] is not None and front_hv(run.points[:k]) >= target:
            return sum(run.epochs[:k]), k
    return None


def within_epochs(run: Run, budget: int) -> list[tuple[float, float] | None]:
    """The run's trials that finished within ``budget`` fine-tuning epochs."""
    spent, points = 0, []
    for point, epochs in zip(run.points, run.epochs):
        spent += epochs
        if spent > budget:
            break
        points.append(point)
    return points


def summarise(runs: dict[str, list[Run]], best: float, n_trials: int, epochs: int) -> list[dict[str, Any]]:
    rows = []
    epoch_budgets = [n_trials * epochs // 4, n_trials * epochs // 2, n_trials * epochs]
    for setting, seeds in runs.items():
        row: dict[str, Any] = {"setting": setting, "seeds": len(seeds),
                               "epochs_total": statistics.median(sum(r.epochs[:n_trials]) for r in seeds)}
        for share in TARGET_SHARES:
            reached = [r for r in (first_reaching(run, share * best) for run in seeds) if r is not None]
            majority = len(reached) * 2 > len(seeds)
            row[f"to_{share}"] = {"reached": len(reached),
                                  "epochs": statistics.median(r[0] for r in reached) if majority else None,
                                  "trials": statistics.median(r[1] for r in reached) if majority else None}
        row["trial_shares"] = {b: statistics.median(front_hv(r.points[:b]) / best for r in seeds)
                               for b in BUDGETS if b <= n_trials}
        row["epoch_shares"] = {b: statistics.median(front_hv(within_epochs(r, b)) / best for r in seeds)
                               for b in epoch_budgets}
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], baseline: str) -> None:
    """One Markdown table: epochs (and trials) to each share, shares at trial and epoch budgets."""
    base = next((r for r in rows if r["setting"] == baseline), None)
    trial_budgets = sorted({b for r in rows for b in r["trial_shares"]})
    epoch_budgets = sorted({b for r in rows for b in r["epoch_shares"]})
    head = ["setting"] + [f"epochs to {share:.0%} (trials; seeds)" for share in TARGET_SHARES] + \
        [f"vs {baseline} @{TARGET_SHARES[-1]:.0%}"] + [f"HV @{b} trials" for b in trial_budgets] + \
        [f"HV @{b} epochs" for b in epoch_budgets]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [row["setting"]]
        for share in TARGET_SHARES:
            got = row[f"to_{share}"]
            cells.append(f"{got['epochs']:g} ({got['trials']:g}; {got['reached']}/{row['seeds']})"
                         if got["epochs"] is not None else f"- ({got['reached']}/{row['seeds']})")
        mine, theirs = row[f"to_{TARGET_SHARES[-1]}"]["epochs"], base and base[f"to_{TARGET_SHARES[-1]}"]["epochs"]
        cells.append(f"{mine / theirs:.2f}x" if mine is not None and theirs else "-")
        cells += [f"{row['trial_shares'][b]:.3f}" for b in trial_budgets]
        cells += [f"{row['epoch_shares'][b]:.3f}" for b in epoch_budgets]
        print("| " + " | ".join(cells) + " |")


def settings_for(args: argparse.Namespace) -> list[Setting]:
    allocations = ("",) if args.no_allocation else ALLOCATIONS
    if args.allocations:
        allocations = tuple("" if a == "none" else a for a in args.allocations)
    stops = (False,) if args.no_early_stop else (False, True)
    out = [Setting(p, es, al) for al in allocations for p in args.proposers for es in stops
           if not (al and p == "nsga2")]  # NSGA-II draws random's trials: its allocation rows would be random's
    if args.random_trials > args.trials:
        out.append(Setting("random", trials=args.random_trials))
    return out


def best_front_keys(runs: dict[str, list[Run]]) -> list[str]:
    """The configurations on the best front known from all runs (inside the reference box)."""
    points = {k: p for seeds in runs.values() for run in seeds for p, k in zip(run.points, run.keys)
              if p is not None and p[0] < REFERENCE[0] and p[1] < REFERENCE[1]}
    return [k for k, p in points.items()
            if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points.values())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of a trial that is not stopped")
    parser.add_argument("--proposers", nargs="+", default=["random", "tpe", "gp", "nsga2"],
                        help="aup proposer names; tpe-mv is multivariate TPE")
    parser.add_argument("--no-allocation", action="store_true", help="leave out the per-layer allocation settings")
    parser.add_argument("--allocations", nargs="+", choices=[a or "none" for a in ALLOCATIONS],
                        help="only these allocation settings (default: all)")
    parser.add_argument("--no-early-stop", action="store_true", help="leave out the early-stopping settings")
    parser.add_argument("--seed-count", type=int, default=DEFAULT_SEEDS, help="trials the seeded settings queue")
    parser.add_argument("--random-trials", type=int, default=120,
                        help="a longer random search, for the epochs random needs to reach each share")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    start = time.perf_counter()
    data = load_digits()
    dense, dense_acc, dense_bytes = pretrain(data)
    print(f"dense model: accuracy {dense_acc:.4f}, {dense_bytes:.0f} bytes; {args.seeds} seeds x {args.trials} "
          f"trials x up to {args.epochs} fine-tuning epochs", flush=True)
    trials = Trials(dense, data, args.epochs)
    seeds = allocation_seed_plan(dense, data, args.seed_count)
    settings = settings_for(args)
    runs: dict[str, list[Run]] = {s.name: [] for s in settings}
    for seed in range(args.seeds):  # interleaved: every setting's seed s before any seed s + 1
        for setting in settings:
            runs[setting.name].append(search(setting, seed, args.trials, trials, dense_bytes, seeds))
            print(f"  seed {seed} {setting.name}: {sum(runs[setting.name][-1].epochs)} epochs, "
                  f"{sum(p is None for p in runs[setting.name][-1].points)} stopped", file=sys.stderr, flush=True)
    best_points = [p for seeds_ in runs.values() for run in seeds_ for p in run.points if p is not None]
    best = front_hv(best_points)
    rows = summarise(runs, best, args.trials, args.epochs)
    front_keys = best_front_keys(runs)
    ceiling = noise_ceiling(trials, front_keys, dense_bytes, best)
    print(f"best known front: hypervolume {best:.4f} (reference {REFERENCE}); "
          f"{trials.computed_epochs} epochs computed, {len(trials.cache)} configurations, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"noise ceiling: the best front's {len(front_keys)} configurations trained again with "
          f"{RESEEDS} fresh seeds reach {', '.join(f'{c:.3f}' for c in ceiling)} of its hypervolume "
          f"(median {statistics.median(ceiling):.3f})")
    baseline = next((s.name for s in settings if s.trials), "random")
    print_table(rows, baseline)
    if args.json:
        Path(args.json).write_text(json.dumps({"best_hv": best, "noise_ceiling": ceiling, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
