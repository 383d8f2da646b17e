"""Names of the metrics every part of aup agrees on (docs/design.md, "Per-trial record").

They are stored as Optuna trial user attributes under exactly these names, so that the views,
the Pareto search and optuna-dashboard all find them.
"""
from __future__ import annotations

SCORE = "score"  # the trial's main result
PARAM_COUNT = "param_count"  # parameters as deployed, after any physical shrink
NONZERO_PARAMS = "nonzero_params"
MACS = "macs"  # mask-aware multiply-accumulates for one sample
MODEL_BYTES = "model_bytes"  # bytes of the exported artifact on disk (the deployed ONNX file when there is one)
MODEL_BYTES_PACKED = "model_bytes_packed"  # bytes of aup's packed torch artifact when an ONNX file is deployed
MODEL_BYTES_GZIP = "model_bytes_gzip"
SPARSITY = "sparsity"  # achieved, over the compressed layers
WEIGHT_BITS = "weight_bits"  # average bits per weight as stored (as shipped in the deployed file when there is one)
# when a deployed file stores a layer at another width than asked (a 3-bit grid in 4-bit storage, 6 bits as
# int8, 16 bits as float, a fallback): one line naming those layers
PRECISION_NOTE = "precision_note"
# median CPU latency, batch 1, fixed threads: of the deployed artifact in ONNX Runtime when one exists
# (never of a fake-quantized torch model), else of the torch model
LATENCY_MS = "latency_ms"
LATENCY_MS_TORCH = "latency_ms_torch"  # the same for the in-memory torch model (eager)
# deployed vs in-memory model on the calibration batches: top-1 agreement (fraction) for class
# scores, the maximum absolute difference for other outputs
DEPLOY_AGREEMENT = "deploy_agreement"
# language models: exp of the token-weighted mean next-token NLL on held-out text (sliding window, see
# aup.compression.torch.lm_data.perplexity); lower is better
PERPLEXITY = "perplexity"

# latency_ms of the trial's model over the dense baseline's, timed interleaved in the trial's own
# process (aup.compression.torch.deploy.latency), and the interquartile range of the per-round ratios: a
# ratio whose spread exceeds its distance from 1 does not show a difference (the views mark it)
LATENCY_MS_RATIO = "latency_ms_ratio"
LATENCY_MS_RATIO_IQR = "latency_ms_ratio_iqr"
# Not a metric: why a compression trial has no size metrics (one line, also in the trial's log).
SIZE_MISSING = "size_missing"

SIZE_METRICS = (PARAM_COUNT, NONZERO_PARAMS, MACS, MODEL_BYTES, MODEL_BYTES_GZIP, SPARSITY, WEIGHT_BITS, LATENCY_MS)
DEPLOY_METRICS = (LATENCY_MS_TORCH, MODEL_BYTES_PACKED, DEPLOY_AGREEMENT)
LATENCY_SIDE_BY_SIDE = (LATENCY_MS_RATIO, LATENCY_MS_RATIO_IQR)
QUALITY_METRICS = (PERPLEXITY,)  # quality measures with a fixed direction (unlike the script's own score)
ALL_METRICS = (SCORE, *SIZE_METRICS, *DEPLOY_METRICS, *LATENCY_SIDE_BY_SIDE, *QUALITY_METRICS)

# Direction in which each size metric is "better"; used for Pareto fronts and ratios to a baseline.
LOWER_IS_BETTER = frozenset({PARAM_COUNT, NONZERO_PARAMS, MACS, MODEL_BYTES, MODEL_BYTES_GZIP, WEIGHT_BITS, LATENCY_MS,
                             LATENCY_MS_TORCH, MODEL_BYTES_PACKED, PERPLEXITY})

# Prefix of per-layer details recorded as user attributes, e.g. "layer_sparsity" -> {"conv1": 0.5}.
LAYER_SPARSITY = "layer_sparsity"
LAYER_BITS = "layer_bits"
# one-shot per-layer quantization sensitivity {"bits", "baseline", "layers": {module: score}}, reported by
# aup.compression.quantization_sensitivity; also stored on the experiment (study user attribute)
QUANT_SENSITIVITY = "quant_sensitivity"
LAYER_BITS_SHIPPED = "layer_bits_shipped"  # {module: stored weight bits in the deployed file} (32: float)

# Metrics the compressor reports for the uncompressed model, so views can show ratios to it.
BASELINE_PREFIX = "baseline_"

# Distillation from the dense model (compression section "distill"): the options the trial used.
DISTILL_ALPHA = "distill_alpha"  # weight of the teacher's soft targets (0: labels only)
DISTILL_TEMPERATURE = "distill_temperature"
