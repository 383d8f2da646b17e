"""Names of the metrics every part of aup agrees on (DESIGN.md, "Per-trial record").

They are stored as Optuna trial user attributes under exactly these names, so that the views,
the Pareto search and optuna-dashboard all find them.
"""
from __future__ import annotations

SCORE = "score"  # the trial's main result
PARAM_COUNT = "param_count"  # parameters as deployed, after any physical shrink
NONZERO_PARAMS = "nonzero_params"
MACS = "macs"  # mask-aware multiply-accumulates for one sample
MODEL_BYTES = "model_bytes"  # bytes of the exported artifact on disk
MODEL_BYTES_GZIP = "model_bytes_gzip"
SPARSITY = "sparsity"  # achieved, over the compressed layers
WEIGHT_BITS = "weight_bits"  # average bits per weight as stored
LATENCY_MS = "latency_ms"  # median CPU latency, batch 1, fixed threads

SIZE_METRICS = (PARAM_COUNT, NONZERO_PARAMS, MACS, MODEL_BYTES, MODEL_BYTES_GZIP, SPARSITY, WEIGHT_BITS, LATENCY_MS)
ALL_METRICS = (SCORE, *SIZE_METRICS)

# Direction in which each size metric is "better"; used for Pareto fronts and ratios to a baseline.
LOWER_IS_BETTER = frozenset({PARAM_COUNT, NONZERO_PARAMS, MACS, MODEL_BYTES, MODEL_BYTES_GZIP, WEIGHT_BITS, LATENCY_MS})

# Prefix of per-layer details recorded as user attributes, e.g. "layer_sparsity" -> {"conv1": 0.5}.
LAYER_SPARSITY = "layer_sparsity"
LAYER_BITS = "layer_bits"

# Metrics the compressor reports for the uncompressed model, so views can show ratios to it.
BASELINE_PREFIX = "baseline_"
