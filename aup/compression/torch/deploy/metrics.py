"""The size, ORT latency and agreement of a deployed (ONNX) file, as trial metrics.

Why its own module: both the compressor base (a trial's export) and the baseline (the dense
model's deployed file) measure a deployed file, and the base already depends on the baseline;
keeping this below both leaves the import graph without a circle.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

from torch import nn

from aup import metrics as M

__all__ = ["deployed_file_metrics"]


def deployed_file_metrics(path: str, model: nn.Module | None, example: Any, batches: Sequence[Any],
                          paused: Callable[[], Any] = contextlib.nullcontext,
                          baseline: str | None = None) -> dict[str, float]:
    """Bytes of ``path``, its ORT latency (batch 1, ``LATENCY_THREADS``) and agreement with ``model``.

    With ``baseline`` (the dense model's deployed file) the latency is timed interleaved with it
    (``latency.interleaved``): ``latency_ms``, ``baseline_latency_ms``, ``latency_ms_ratio`` and
    ``latency_ms_ratio_iqr`` all come from that one side-by-side run.
    """
    from aup.compression.torch.deploy.settings import agreement, load_deployed, ort_latency_ms
    from aup.compression.torch.deploy.latency import interleaved, ort_caller
    from aup.compression.torch.measure import LATENCY_THREADS, sizes_of
    from aup.compression.torch.deploy.runtime import fitting_batches

    deployed = load_deployed(path, threads=LATENCY_THREADS)
    metrics = {**sizes_of(path)}
    if baseline is None:
        metrics[M.LATENCY_MS] = ort_latency_ms(deployed, example)
    else:
        dense = load_deployed(baseline, threads=LATENCY_THREADS)
        metrics.update(interleaved(ort_caller(deployed, example), ort_caller(dense, example)).metrics(M.LATENCY_MS))
    if model is not None:
        fitting = fitting_batches(batches, deployed.input_names, deployed.input_shapes, example)
        with paused():
            metrics[M.DEPLOY_AGREEMENT] = agreement(deployed, model, fitting)
    return metrics
