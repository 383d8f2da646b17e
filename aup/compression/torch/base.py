"""``Compressor``: the public face every torch compressor shares (DESIGN.md "Compressor API").

Pruners (``pruners/base.py``) and quantizers (``quantization/base.py``) subclass it. This class
knows nothing about pruning or quantization: it keeps the model, the validated config_list and the
optional optimizer / example input, and implements the lifecycle methods with neutral defaults plus
the measuring and reporting that every compressor needs (FLOPs, size metrics to the trial channel).
"""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["Compressor", "InputRecorder", "count_flops_params", "as_example_input", "ignore_export_arguments"]


def ignore_export_arguments(ignored: dict[str, Any]) -> None:
    """``export_model`` keywords it does not use, logged at debug level only.

    Auptimizer's examples pass ``save_best_only=True`` and the whole job config (``**config``:
    ``compressor``, ``config_list``, ``tid``, ...) to ``export_model``; both are meaningless here
    and must not clutter the trial's output with warnings.
    """
    if ignored:
        logger.debug("export_model: ignoring arguments it does not use: %s", ", ".join(sorted(ignored)))


class InputRecorder:
    """One-shot forward pre-hook keeping one sample of the first real input, so that export can
    measure the model without the user passing a dummy input. Picklable (no handle in its state)."""

    def __init__(self, model: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle: Any = model.register_forward_pre_hook(self)

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0:
            self.value = inputs[0][:1].detach().clone()
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"value": self.value, "handle": None}


class Compressor:
    """Base of every torch compressor.

    ``Compressor(model, config_list, optimizer=None, dummy_input=None)``. ``compress()`` attaches
    the compression and returns the same model object; ``export_model`` writes the artifact.
    Subclasses set ``compressor_name`` (the registry key) and ``compression_type``.
    """

    framework: ClassVar[str] = "torch"
    compression_type: ClassVar[str] = ""
    compressor_name: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        optimizer: torch.optim.Optimizer | None = None,
        dummy_input: Any = None,
    ) -> None:
        self.model = model
        self.config_list = config_list
        self.optimizer = optimizer
        self.dummy_input = dummy_input
        self.epoch = 0
        self.speedup_applied = False
        _snapshot_baseline(model)

    @property
    def bound_model(self) -> nn.Module:
        """NNI's name for the compressed model."""
        return self.model

    # ------------------------------------------------------------------ lifecycle
    def compress(self) -> nn.Module:
        """Attach the compression; returns the (same) model."""
        return self.model

    def update_epoch(self, epoch: int) -> None:
        """Tell epoch-scheduled compressors (AGP) that ``epoch`` has started."""
        self.epoch = int(epoch)

    def step(self) -> None:
        """Call after each optimizer step when no ``optimizer`` was given to the compressor."""

    def get_prune_iterations(self) -> Sequence[int]:
        """Rounds of iterative pruning (lottery ticket); one-shot compressors have exactly one."""
        return [0]

    def prune_iteration_start(self) -> None:
        """Start the next pruning round (lottery ticket); nothing to do for one-shot compressors."""

    def get_masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Pruning masks in NNI's format; compressors without masks have none."""
        return {}

    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Physically shrink a structurally pruned model; only pruners can."""
        raise ValueError(
            f"apply_speedup shrinks pruned models; {self.compressor_name!r} is a "
            f"{self.compression_type or 'non-pruning'} compressor"
        )

    # ------------------------------------------------------------------ measuring
    def count_flops_params(self, x: Any, verbose: bool = True) -> tuple[float, float, list[dict[str, Any]]]:
        """``(flops, params, per_layer)`` of the model as compressed now (mask-aware).

        ``x`` is an input tensor, a tuple of tensors, or an input shape such as ``(1, 1, 8, 8)``.
        """
        return count_flops_params(self.model, x, masks=self.get_masks(), verbose=verbose)

    def example_input(self, dummy_input: Any = None) -> Any:
        """The input used for measuring: the argument, else the one given earlier or seen in training."""
        if dummy_input is not None:
            return dummy_input
        given = getattr(self, "dummy_input", None)
        recorder = getattr(self, "_input_recorder", None)
        if given is None and recorder is not None:
            return recorder.value
        return given

    def measure(self, artifact_path: str | None = None, example_input: Any = None,
                quant_bits: dict[str, Any] | None = None) -> dict[str, float]:
        """Measured size metrics (DESIGN names) of the model as it is now, via ``measure.py``."""
        from aup.compression.torch.measure import measure_model

        masks = None if getattr(self, "speedup_applied", False) else (self.get_masks() or None)
        return measure_model(
            self.model,
            self.example_input(example_input),
            masks=masks,
            artifact_path=artifact_path,
            compressed_modules=self.compressed_module_names(),
            quant_bits=quant_bits,
        )

    def compressed_module_names(self) -> list[str]:
        """Names of the modules this compressor acts on (for the achieved-sparsity metric)."""
        layers = getattr(self, "layers", None)
        if isinstance(layers, dict):
            return list(layers)
        if isinstance(layers, (list, tuple)):
            return [getattr(layer, "name", str(layer)) for layer in layers]
        return []

    def extra_metrics(self) -> dict[str, Any]:
        """Compressor-specific details reported with the measured metrics (per-layer sparsity, bits)."""
        return {}

    def report_metrics(self, artifact_path: str | None = None, example_input: Any = None,
                       quant_bits: dict[str, Any] | None = None) -> dict[str, float] | None:
        """Inside an aup trial, send the measured metrics to the runner (trial attributes in the DB).

        Outside a trial (no ``AUP_CHANNEL``) nothing is measured. A failure to measure is logged as
        a warning and never breaks the user's script.
        """
        from aup import channel, client

        if channel.channel_path() is None:
            return None
        try:
            metrics = self.measure(artifact_path, example_input, quant_bits)
        except Exception as exc:  # noqa: BLE001 - metrics must never kill a finished trial
            warnings.warn(f"aup: could not measure the compressed model: {type(exc).__name__}: {exc}", stacklevel=2)
            return None
        metrics = {**metrics, **self.extra_metrics(), **_baseline_metrics(self.example_input(example_input))}
        client.log_metrics(**metrics)
        return metrics


# Inside a trial (one process per trial) the first compressor built sees the uncompressed model: a
# copy of it is measured once, at the first report, and sent as ``baseline_<metric>`` so that views
# show ratios to the dense model and constraints like "model_bytes <= 0.25 * baseline_model_bytes"
# can be evaluated. Outside a trial nothing is copied.
_baseline: dict[str, Any] = {"model": None, "metrics": None}


def _snapshot_baseline(model: nn.Module) -> None:
    from aup import channel

    if channel.channel_path() is None or _baseline["model"] is not None or _baseline["metrics"] is not None:
        return
    try:
        _baseline["model"] = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be copied just has no baseline
        logger.info("aup: no baseline metrics (the model cannot be deep-copied: %s)", exc)


def _baseline_metrics(example_input: Any) -> dict[str, float]:
    from aup.metrics import BASELINE_PREFIX

    if _baseline["metrics"] is None and _baseline["model"] is not None and example_input is not None:
        from aup.compression.torch.measure import measure_model

        try:
            measured = measure_model(_baseline["model"], example_input)
        except Exception as exc:  # noqa: BLE001 - never break the trial over the baseline
            logger.warning("aup: could not measure the uncompressed baseline: %s", exc)
            measured = {}
        _baseline["metrics"] = {f"{BASELINE_PREFIX}{k}": v for k, v in measured.items() if k != "sparsity"}
        _baseline["model"] = None
    return dict(_baseline["metrics"] or {})


# ---------------------------------------------------------------------- FLOPs counter
def as_example_input(x: Any, model: nn.Module | None = None) -> Any:
    """A shape tuple becomes a zeros tensor on the model's device; tensors pass through."""
    if isinstance(x, (tuple, list)) and x and all(isinstance(v, int) for v in x):
        device = next((p.device for p in model.parameters()), torch.device("cpu")) if model is not None else None
        return torch.zeros(tuple(x), device=device)
    return x


def count_flops_params(
    model: nn.Module,
    x: Any,
    masks: dict[str, dict[str, torch.Tensor | None]] | None = None,
    verbose: bool = True,
) -> tuple[float, float, list[dict[str, Any]]]:
    """Mask-aware ``(flops, params, per_layer)`` in NNI's convention ("flops" are MACs per sample).

    One counter for everything: this is :func:`aup.compression.torch.measure.count_flops_params`,
    the same rule that produces the trials' ``macs`` metric (non-zero weights x output positions for
    conv/linear layers, so masked filters and pruned elements count as removed).
    """
    from aup.compression.torch.measure import count_flops_params as _count

    return _count(model, as_example_input(x, model), verbose=verbose, masks=masks)
