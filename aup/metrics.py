"""The metrics every part of aup agrees on (docs/design.md, "Per-trial record"): one registry row each.

Metric values are stored as Optuna trial user attributes under exactly these names, so that the views,
the Pareto search and optuna-dashboard all find them. Each name has one :class:`Metric` row saying which
way is better, its unit and label, whether views show a ratio to the dense baseline, and how a cell
reads; the views, constraints and the end-of-run table ask this registry instead of keeping tables of
their own, so adding a metric is one row here (docs/architecture.md, "Adding a metric").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["min", "max"]
Show = Literal["number", "bytes", "count", "ms"]
Group = Literal["score", "size", "deploy", "side_by_side", "quality", "script"]

SCORE = "score"  # the trial's main result
ACCURACY = "accuracy"  # a training script's usual name for its score (not recorded by aup itself)
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

# Prefix of per-layer details recorded as user attributes, e.g. "layer_sparsity" -> {"conv1": 0.5}.
LAYER_SPARSITY = "layer_sparsity"
LAYER_BITS = "layer_bits"
# one-shot per-layer quantization sensitivity {"bits", "baseline", "layers": {module: score}}, reported by
# aup.compression.quantization_sensitivity; also stored on the experiment (study user attribute)
QUANT_SENSITIVITY = "quant_sensitivity"
LAYER_BITS_SHIPPED = "layer_bits_shipped"  # {module: stored weight bits in the deployed file} (32: float)

# Metrics the compressor reports for the uncompressed model, so views can show ratios to it.
BASELINE_PREFIX = "baseline_"
RATIO_SUFFIX = "_ratio"

# Distillation from the dense model (compression section "distill"): the options the trial used.
DISTILL_ALPHA = "distill_alpha"  # weight of the teacher's soft targets (0: labels only)
DISTILL_TEMPERATURE = "distill_temperature"


@dataclass(frozen=True)
class Metric:
    """One registry row: everything a view, a constraint or a Pareto front needs to know about a metric.

    ``direction`` is which way is better (fronts, constraint bounds, "best first" sorting); ``show`` is
    how a cell reads (``bytes``: 18.3 kB, ``count``: 120k, ``ms``: 1.9 ms, ``number``: 4 significant
    digits; bytes and counts also get a log axis); ``ratio`` adds the column ``<name>_ratio`` (the value
    over ``baseline_<name>``) when the trial recorded a baseline. The ranks order the metric among
    ``aup compare``'s rows (``compare``), the plot's default x axis (``size_axis``), the size objective
    added to a single-objective front (``front``) and the end-of-run table (``summary``); ``None`` leaves
    it out. ``group`` says who records it (``size``: the compressor's measure, ``deploy``: the deployed
    file, ``script``: the user's training script).
    """
    name: str
    direction: Direction = "max"
    unit: str = ""
    label: str = ""
    show: Show = "number"
    ratio: bool = False
    group: Group = "size"
    compare: int | None = None
    size_axis: int | None = None
    front: int | None = None
    summary: int | None = None

    @property
    def ratio_name(self) -> str:
        """The column holding the value over the dense baseline's (``model_bytes_ratio``)."""
        return self.name + RATIO_SUFFIX

    @property
    def baseline_name(self) -> str:
        """The attribute holding the dense model's value (``baseline_model_bytes``)."""
        return BASELINE_PREFIX + self.name

    @property
    def log_scale(self) -> bool:
        """Sizes and counts span orders of magnitude across compressions: plotted on a log axis."""
        return self.show in ("bytes", "count")


_REGISTRY: dict[str, Metric] = {}


def register(row: Metric) -> Metric:
    """Add a metric row; registering the same name twice with another row is an error (names are shared)."""
    known = _REGISTRY.get(row.name)
    if known is not None and known != row:
        raise ValueError(f"metric {row.name!r} is already registered with other facts: {known}")
    _REGISTRY[row.name] = row
    return row


def unregister(name: str) -> None:
    """Remove a row (tests that register a toy metric put the registry back as it was)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Metric | None:
    """The row of ``name``, or None for a metric only the user's script knows (``f1``)."""
    return _REGISTRY.get(name)


def rows() -> tuple[Metric, ...]:
    """Every registered row, in registration order."""
    return tuple(_REGISTRY.values())


def names(*groups: Group) -> tuple[str, ...]:
    """Registered names, of the given groups only when some are named."""
    return tuple(m.name for m in _REGISTRY.values() if not groups or m.group in groups)


def direction(name: str) -> Direction:
    """Which way ``name`` is better; ``<metric>_ratio`` goes the metric's way, unknown names ``max``."""
    base = name[:-len(RATIO_SUFFIX)] if name.endswith(RATIO_SUFFIX) else name
    row = _REGISTRY.get(base)
    return row.direction if row else "max"


def lower_is_better(name: str) -> bool:
    """Whether smaller values of ``name`` are better (sizes, latency, perplexity)."""
    return direction(name) == "min"


def ranked(field: Literal["compare", "size_axis", "front", "summary"]) -> tuple[str, ...]:
    """Names whose rank ``field`` is set, by that rank (e.g. compare's rows in order)."""
    chosen = [(getattr(m, field), i, m.name) for i, m in enumerate(_REGISTRY.values()) if getattr(m, field) is not None]
    return tuple(name for _, _, name in sorted(chosen))


def ratio_metrics() -> tuple[str, ...]:
    """Metrics the views divide by their ``baseline_<metric>``."""
    return tuple(m.name for m in _REGISTRY.values() if m.ratio)


def label(name: str) -> str:
    """What a human calls the metric (``model size``); unknown names keep their own name."""
    row = _REGISTRY.get(name)
    return row.label if row and row.label else name


def unit(name: str) -> str:
    """The metric's unit (``bytes``), or ``""``."""
    row = _REGISTRY.get(name)
    return row.unit if row else ""


def show(name: str) -> Show:
    """How a cell of ``name`` reads (see :class:`Metric`)."""
    row = _REGISTRY.get(name)
    return row.show if row else "number"


# ---- the rows (order: the ``_ratio`` columns and ``aup export`` follow it) -------------------------
for _row in (
    Metric(SCORE, group="score", label="score", ratio=True, compare=0),
    Metric(PARAM_COUNT, "min", "parameters", "parameters", "count", ratio=True, compare=2, size_axis=2, front=2,
           summary=0),
    Metric(NONZERO_PARAMS, "min", "non-zero parameters", "non-zero parameters", "count", ratio=True, compare=3,
           size_axis=1, front=1),
    Metric(MACS, "min", "MACs per sample", "MACs", "count", ratio=True, compare=4, size_axis=3, summary=2),
    Metric(MODEL_BYTES, "min", "bytes", "model size", "bytes", ratio=True, compare=5, size_axis=0, front=0,
           summary=1),
    Metric(MODEL_BYTES_GZIP, "min", "bytes", "gzipped model size", "bytes", ratio=True),
    Metric(LATENCY_MS, "min", "ms", "CPU latency (batch 1)", "ms", ratio=True, compare=6, size_axis=4),
    Metric(LATENCY_MS_TORCH, "min", "ms", "torch eager latency (batch 1)", "ms", ratio=True, group="deploy",
           compare=7),
    Metric(MODEL_BYTES_PACKED, "min", "bytes", "packed torch artifact", "bytes", ratio=True, group="deploy"),
    Metric(ACCURACY, group="script", ratio=True, compare=1),
    Metric(DEPLOY_AGREEMENT, label="deployed vs in-memory agreement", group="deploy", compare=8),
    Metric(SPARSITY, unit="fraction of zeros", label="sparsity", compare=9),
    Metric(WEIGHT_BITS, "min", "bits per weight", "weight bits", compare=10),
    Metric(LATENCY_MS_RATIO, group="side_by_side"),
    Metric(LATENCY_MS_RATIO_IQR, label="spread (IQR) of the side-by-side latency ratio", group="side_by_side"),
    Metric(PERPLEXITY, "min", label="perplexity (lower is better)", group="quality"),
):
    register(_row)

# Groups as of import (the registered built-in rows); code that must see rows registered later calls names().
SIZE_METRICS = names("size")
DEPLOY_METRICS = names("deploy")
LATENCY_SIDE_BY_SIDE = names("side_by_side")
QUALITY_METRICS = names("quality")  # quality measures with a fixed direction (unlike the script's own score)
ALL_METRICS = names("score", "size", "deploy", "side_by_side", "quality")
LOWER_IS_BETTER = frozenset(m.name for m in rows() if m.direction == "min")
