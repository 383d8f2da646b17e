"""A store of realistic, reproducible compression trials without running any model.

Why: the speed budget of the views ("list or compare 1,000 trials in under 1 s") must be checked
on a store of that size, and running 1,000 real trials is far too slow for a benchmark. The trials
written here carry exactly the attributes the runner and the compressors record (docs/design.md,
"Per-trial record"): hyperparameters under their experiment names, the size metrics, the
``baseline_*`` values of the uncompressed model, per-layer sparsity and bits, failure reasons.
The numbers follow a plausible accuracy/size trade-off so that Pareto fronts are non-trivial.
"""
from __future__ import annotations

import math
import random
from typing import Any

LAYERS = ("conv1", "conv2", "fc1", "fc2")
BASELINE = {"param_count": 120_000, "nonzero_params": 120_000, "macs": 2_400_000,
            "model_bytes": 482_000, "model_bytes_gzip": 441_000, "latency_ms": 1.9, "score": 0.975}


def _metrics(rng: random.Random, lr: float, sparsity: float, bits: int, pruner: str) -> dict[str, Any]:
    """Size metrics that follow from the sampled compression, with measurement-like noise."""
    layer_sparsity = {name: round(min(0.99, max(0.0, sparsity + rng.uniform(-0.1, 0.1))), 3) for name in LAYERS}
    structured = pruner in ("l1filter", "fpgm")
    kept = 1.0 - sparsity
    params = int(BASELINE["param_count"] * (kept if structured else 1.0))
    nonzero = int(BASELINE["nonzero_params"] * kept)
    model_bytes = int(nonzero * bits / 8 * 1.05 + 2_000 + rng.randint(0, 500))
    lr_penalty = abs(math.log10(lr) + 2.5) * 0.01
    score = BASELINE["score"] - 0.25 * sparsity ** 3 - (8 - bits) * 0.004 - lr_penalty + rng.gauss(0, 0.004)
    return {
        "score": round(score, 4), "accuracy": round(score, 4),
        "param_count": params, "nonzero_params": nonzero,
        "macs": int(BASELINE["macs"] * (kept if structured else 1.0)),
        "model_bytes": model_bytes, "model_bytes_gzip": int(model_bytes * 0.9),
        "sparsity": round(sparsity, 4), "weight_bits": float(bits),
        "latency_ms": round(BASELINE["latency_ms"] * (0.4 + 0.6 * kept if structured else 1.0) + rng.uniform(0, 0.1), 3),
        "layer_sparsity": layer_sparsity, "layer_bits": {name: bits for name in LAYERS},
        **{f"baseline_{key}": value for key, value in BASELINE.items()},
    }


def make_store(storage: Any, name: str = "synthetic", n_trials: int = 1000, seed: int = 0,
               fail_every: int = 25, prune_every: int = 10, multi_objective: bool = False) -> str:
    """Write one experiment study of ``n_trials`` trials into ``storage`` (URL or optuna storage).

    Returns the study name. Trials are added with ``study.add_trials`` (one transaction each), which
    is how a store of 1,000 trials is built in seconds rather than minutes.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    rng = random.Random(seed)
    target: Any = {"score": "max", "model_bytes": "min"} if multi_objective else "max"
    directions = ["maximize", "minimize"] if multi_objective else ["maximize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    experiment = {
        "name": name, "script": "train.py", "proposer": "random", "n_samples": n_trials,
        "target": target, "workingdir": "/tmp/synthetic",
        "parameter_config": [{"name": "lr", "range": [1e-4, 1e-1], "type": "float", "log": True}],
        "compression": {"framework": "torch", "type": "pruning", "compressor": ["level", "l1filter"],
                        "config_list": [{"sparsity": [0.1, 0.95], "op_types": ["Conv2d", "Linear"]}]},
    }
    for key, value in {"experiment": experiment, "workingdir": "/tmp/synthetic", "status": "finished",
                       "started": "2024-05-01T10:00:00+00:00", "ended": "2024-05-01T12:30:00+00:00"}.items():
        study.set_user_attr(key, value)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "sparsity (default)": FloatDistribution(0.1, 0.95),
             "quant_bits (default)": IntDistribution(2, 8), "compressor": CategoricalDistribution(["level", "l1filter", "fpgm"])}
    trials = [_trial(rng, number, dists, fail_every, prune_every, multi_objective) for number in range(n_trials)]
    study.add_trials(trials)
    return name


def _trial(rng: random.Random, number: int, dists: dict[str, Any], fail_every: int, prune_every: int,
           multi_objective: bool) -> Any:
    import optuna
    from optuna.trial import TrialState

    params = {"lr": 10 ** rng.uniform(-4, -1), "sparsity (default)": rng.uniform(0.1, 0.95),
              "quant_bits (default)": rng.choice([2, 4, 8]), "compressor": rng.choice(["level", "l1filter", "fpgm"])}
    attrs: dict[str, Any] = {"attempts": 1, "job_config": {"tid": number, **params},
                             "log_path": f"/tmp/synthetic/jobs/{number}.out"}
    if fail_every and number % fail_every == fail_every - 1:
        reason = rng.choice(["exit code 1: CUDA out of memory", "timeout after 600 s", "exit code 1: CUDA out of memory"])
        attrs.update(status_reason=reason, attempts=2)
        return optuna.trial.create_trial(state=TrialState.FAIL, params=params, distributions=dists, user_attrs=attrs)
    metrics = _metrics(rng, params["lr"], params["sparsity (default)"], params["quant_bits (default)"], params["compressor"])
    attrs.update(metrics)
    if prune_every and number % prune_every == prune_every - 1:
        attrs["status_reason"] = "early stopped at step 3"
        return optuna.trial.create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                         user_attrs=attrs, intermediate_values={0: metrics["score"] - 0.05})
    values = [metrics["score"], float(metrics["model_bytes"])] if multi_objective else [metrics["score"]]
    return optuna.trial.create_trial(state=TrialState.COMPLETE, values=values, params=params,
                                     distributions=dists, user_attrs=attrs)
