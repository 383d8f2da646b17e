"""torch-pruning's dependency graph for a shrink: traced on the meta device when the model allows it
(no forward computed), else traced for real; and the pruning group of a layer, reused from the
dependency analysis' cache when it computed it."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from aup.compression.torch.measure import call_model, first_tensor
from aup.compression.torch.shrink.report import Masks, ShrinkReport

logger = logging.getLogger("aup.compression.torch.shrink.core")


def build_graph(tp: Any, model: nn.Module, dummy_input: Any, captured: dict[str, torch.Tensor],
                 report: ShrinkReport, masks: Masks) -> Any:
    """The graph on the meta device (no forward computed), else traced for real: then the trace's
    forward pass also gives the masked model's reference output."""
    from aup.compression.torch.graph.dependency import meta_graph

    graph = meta_graph(model, dummy_input)
    if graph is not None:
        return graph

    def forward(m: nn.Module, x: Any) -> Any:
        out = call_model(m, x)
        captured["out"] = first_tensor(out).detach().clone()
        return out

    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=dummy_input, forward_fn=forward,
                                                         verbose=False)
    except Exception as exc:  # torch-pruning cannot trace this model: keep every layer dense
        reason = f"torch-pruning could not trace the model: {type(exc).__name__}: {exc}"
        logger.warning("shrink skipped: %s", reason)
        for name in masks:
            report.kept_dense[name] = reason
        return None



def pruning_group(graph: Any, module: nn.Module, handler: Any, channels: int) -> Any:
    """The full-channel group of ``module``: computed by the dependency analysis of the masks when
    it was (``dependency.cached_group``, used once), else now."""
    from aup.compression.torch.graph.dependency import cached_group

    group = cached_group(graph, module, handler, channels)
    return group if group is not None else graph.get_pruning_group(module, handler, list(range(channels)))
