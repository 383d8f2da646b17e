"""``Compressor``: the public face every torch compressor shares (docs/design.md "Compressor API").

Pruners (``pruners/base.py``) and quantizers (``quantization/base.py``) subclass it. This class
knows nothing about pruning or quantization: it keeps the model, the validated config_list and the
optional optimizer / example input, and implements the lifecycle methods with neutral defaults plus
the measuring and reporting that every compressor needs (FLOPs, size metrics to the trial channel).
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
import weakref
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from aup import metrics as M
from aup.metrics import SIZE_MISSING

from aup.compression.lifecycle import TrainingLifecycle
from aup.compression.torch.deploy.baseline import baseline_artifact, baseline_metrics, snapshot_baseline
from aup.compression.torch.deploy.settings import CalibrationRecorder, DeploySettings
from aup.compression.torch.deploy.metrics import deployed_file_metrics
from aup.compression.torch.masking import pruned_channels

logger = logging.getLogger(__name__)

__all__ = ["Compressor", "count_flops_params", "as_example_input", "size_missing"]


def ignore_export_arguments(ignored: dict[str, Any]) -> None:
    """``export_model`` keywords it does not use, logged at debug level only.

    Auptimizer's examples pass ``save_best_only=True`` and the whole job config (``**config``:
    ``compressor``, ``config_list``, ``tid``, ...) to ``export_model``; both are meaningless here
    and must not clutter the trial's output with warnings.
    """
    if ignored:
        logger.debug("export_model: ignoring arguments it does not use: %s", ", ".join(sorted(ignored)))


class Compressor(TrainingLifecycle):
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
        self.deploy_settings: Any = _UNSET  # set from the job config's compression_deploy by create_compressor
        self.reported = False
        self._deploy_failure: str | None = None  # why the last deployed-artifact export failed
        self._recorder = CalibrationRecorder.attach(model)
        self.distiller: Any = None  # set by set_distillation / enable_distillation
        self.distill_options: Any = None
        snapshot_baseline(model, self.baseline_kind)
        _register_live(self)

    def baseline_kind(self) -> str | None:
        """``"onnx"`` when this compressor's report will be a deployed file's, else ``"torch"``
        (None while a subclass is still being built and cannot tell)."""
        try:
            return "onnx" if self.effective_deploy() is not None else "torch"
        except AttributeError:  # e.g. a pipeline before its stages are set
            return None

    @property
    def bound_model(self) -> nn.Module:
        """NNI's name for the compressed model."""
        return self.model

    # ------------------------------------------------------------------ lifecycle
    def compress(self) -> nn.Module:
        """Attach the compression; returns the (same) model."""
        return self.model

    def get_masks(self) -> dict[str, dict[str, torch.Tensor | None]]:
        """Pruning masks in NNI's format; compressors without masks have none."""
        return {}

    def apply_speedup(self, dummy_input: Any) -> nn.Module:
        """Physically shrink a structurally pruned model; only pruners can."""
        raise ValueError(
            f"apply_speedup shrinks pruned models; {self.compressor_name!r} is a "
            f"{self.compression_type or 'non-pruning'} compressor"
        )

    # ------------------------------------------------------------------ distillation
    def set_distillation(self, options: Any, teacher: nn.Module | None) -> None:
        """Use ``teacher`` (the dense snapshot) with ``options`` (``DistillOptions``) in :meth:`distill_loss`."""
        from aup.compression.torch.distill import Distiller

        if self.distiller is not None:
            self.distiller.remove()
        self.distill_options = options
        self.distiller = Distiller(teacher, self.model, options, self.kept_channels) \
            if teacher is not None and options.active else None

    def kept_channels(self) -> dict[str, torch.Tensor]:
        """After ``apply_speedup``: per pruned module, the indices of the output channels it kept (the
        filters its mask left), which the distiller compares with the same channels of the teacher."""
        masks = getattr(self, "speedup_masks", None) or {}
        kept = {}
        for name, entry in masks.items():
            weight = entry.get("weight") if isinstance(entry, dict) else None
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                kept[name] = (~pruned_channels(weight)).nonzero().flatten()
        return kept

    def enable_distillation(self, alpha: float = 0.5, temperature: float = 4.0, layers: Any = (),
                            layer_weight: float = 1.0) -> None:
        """Distill from the model as it is now (call before ``compress()`` and before fine-tuning);
        ``create_compressor`` does this from the experiment's ``distill`` options."""
        from aup.compression.distill_spec import parse_distill

        from aup.compression.torch.deploy.baseline import dense_snapshot

        options = parse_distill({"alpha": alpha, "temperature": temperature, "layers": list(layers)
                                 if not isinstance(layers, dict) else dict(layers), "layer_weight": layer_weight},
                                "enable_distillation")
        self.set_distillation(options, dense_snapshot(self.model) if options.active else None)

    def distill_loss(self, outputs: Any, loss: torch.Tensor, inputs: Any) -> torch.Tensor:
        """The training loss with the dense teacher's help: ``loss = compressor.distill_loss(outputs,
        loss, inputs)`` where ``outputs = model(inputs)`` and ``loss`` is the label loss.

        Without distillation options (or ``alpha = 0`` and no layers) ``loss`` is returned as is, so
        a script can always call it. See :mod:`aup.compression.torch.distill` for the formula.
        """
        if self.distiller is None:
            return loss
        with self._paused():  # the teacher's forward feeds neither calibration nor pruner statistics
            return self.distiller.loss(outputs, loss, inputs)

    # ------------------------------------------------------------------ measuring
    def count_flops_params(self, x: Any, verbose: bool = True) -> tuple[float, float, list[dict[str, Any]]]:
        """``(flops, params, per_layer)`` of the model as compressed now (mask-aware).

        ``x`` is an input tensor, a tuple of tensors, or an input shape such as ``(1, 1, 8, 8)``.
        """
        return count_flops_params(self.model, x, masks=self.get_masks(), verbose=verbose)

    def example_input(self, dummy_input: Any = None) -> Any:
        """The input used for measuring: the argument, else the one given earlier, else one sample
        (batch 1) of the first batch the model saw."""
        if dummy_input is not None:
            return dummy_input
        if getattr(self, "dummy_input", None) is not None:
            return self.dummy_input
        recorder = getattr(self, "_recorder", None)
        return recorder.first if recorder is not None else None

    def calibration_batches(self) -> list[Any]:
        """Batches the model saw (bounded reservoir), for int8 calibration and the agreement check."""
        recorder = getattr(self, "_recorder", None)
        batches = [b[0] if len(b) == 1 else b for b in (recorder.batches if recorder is not None else [])]
        if not batches and self.example_input() is not None:
            batches = [self.example_input()]
        return batches

    def measure(self, artifact_path: str | None = None, example_input: Any = None,
                quant_bits: dict[str, Any] | None = None) -> dict[str, float]:
        """Measured size metrics (the names of docs/design.md) of the model as it is now, via ``measure.py``."""
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

    def distill_metrics(self) -> dict[str, float]:
        """``distill_alpha`` (0 included) and, when a teacher was used, ``distill_temperature``."""
        from aup import metrics as M

        options = self.distill_options
        if options is None:
            return {}
        return {M.DISTILL_ALPHA: options.alpha, **({M.DISTILL_TEMPERATURE: options.temperature} if options.active else {})}

    # ------------------------------------------------------------------ deployment
    def removes_whole_channels(self) -> bool:
        """Whether this compressor is a structured pruner (whole filters/channels go, so the model can
        be physically shrunk): a catalog fact, never guessed from the name."""
        from aup.compression import catalog

        return catalog.is_structured(self.framework, self.compression_type, self.compressor_name)

    def quantizes(self) -> bool:
        """Whether this compressor quantizes (its deployable artifact is then int8 by default)."""
        return False

    def effective_deploy(self) -> DeploySettings | None:
        """The experiment's ``deploy`` setting; without one, int8 ONNX for quantizers when ORT is installed."""
        if self.deploy_settings is not _UNSET:
            return self.deploy_settings
        from aup.compression.torch.deploy.settings import ort_available

        return DeploySettings() if self.quantizes() and ort_available() else None

    @contextlib.contextmanager
    def deployable(self) -> Iterator[tuple[nn.Module, list[str] | None, dict[str, Any]]]:
        """``(model to export, modules to make int8 or None for every conv/linear, export_onnx
        options)``, restored on exit."""
        yield self.model, None, {}

    def write_deployed(self, path: str, settings: DeploySettings | None = None, example_input: Any = None) -> str:
        """Write the deployable ONNX artifact (structured pruning shrunk, quantized layers at their bits:
        int8 QDQ, MatMulNBits / 4-bit convolution codes, or float; :mod:`.ort_mixed`) and record what
        each layer was stored as in ``self.shipped_precision``."""
        from aup.compression.torch.deploy.settings import export_onnx

        settings = settings or self.effective_deploy() or DeploySettings()
        example = self.example_input(example_input)
        if example is None:
            raise ValueError("an ONNX export needs an example input: pass dummy_input=<a batch>, or run the model "
                             "on a batch first")
        shipped: dict[str, Any] = {}
        with self._paused(), self.deployable() as (model, int8_names, options):
            if settings.int8 == "none":
                int8 = None
                options = {k: v for k, v in options.items() if k not in ("low_bits", "grids")}
            elif int8_names is None:
                int8 = [n for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))
                        or isinstance(getattr(m, "in_proj_weight", None), torch.Tensor)]  # attention's q/k/v
            else:
                int8 = int8_names
            written = export_onnx(model, example, path, int8_modules=int8, calibration=self.calibration_batches(),
                                  per_channel=settings.per_channel, shipped=shipped, **options)
            self.shipped_precision = self._shipped_record(model, shipped)
        return written

    def asked_weight_bits(self) -> dict[str, int]:
        """``{module: weight bits asked}`` of the quantized layers (none for a pruner)."""
        return {}

    def _shipped_record(self, model: nn.Module, shipped: dict[str, Any]) -> dict[str, Any]:
        """What the deployed file stores per layer, its parameter-weighted ``weight_bits`` and a one-line
        note when an asked precision could not be shipped as asked (ort_mixed's table)."""
        from aup.compression.torch.deploy.mixed import precision_note, shipped_weight_bits

        asked = self.asked_weight_bits()
        for module, bits in asked.items():
            entry = shipped.setdefault(module, {"asked": bits, "shipped": 32, "as": "float"})
            if entry.get("asked") is None:
                entry["asked"] = bits
        return {"layers": shipped, M.WEIGHT_BITS: shipped_weight_bits(model.named_parameters, shipped),
                "note": precision_note(shipped)}

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """aup's own forward passes neither feed calibration nor (pruners) the statistics."""
        with contextlib.ExitStack() as stack:
            recorder = getattr(self, "_recorder", None)
            if recorder is not None:
                stack.enter_context(recorder.pause())
            paused = getattr(self, "statistics_paused", None)
            if callable(paused):
                stack.enter_context(paused())
            yield

    def _export(self, model_path: str, folder_name: str, fmt: str | None, example: Any,
                write_packed: Callable[[str], dict[str, Any] | None]) -> str:
        """Shared tail of ``export_model``: write ``fmt`` at the path, then report the metrics once.

        ``write_packed(path)`` writes aup's packed artifact and returns the quantized bits per
        parameter (or None); for ``format="onnx"`` it is written to a temporary file, measured as
        ``model_bytes_packed``, and the ONNX file becomes the measured ``model_bytes``.
        """
        os.makedirs(folder_name, exist_ok=True)
        path = os.path.join(folder_name, model_path)
        if fmt in (None, "aup", "torch"):
            bits = write_packed(path)
            self.report_metrics(artifact_path=path, example_input=example, quant_bits=bits)
            return path
        if fmt != "onnx":
            raise ValueError(f"export_model: format must be 'onnx' or None (aup's packed artifact), got {fmt!r}")
        settings = self.effective_deploy() if self.deploy_settings not in (_UNSET, None) else None
        self.write_deployed(path, settings or DeploySettings(int8="static" if self.quantizes() else "none"),
                            example)
        with tempfile.TemporaryDirectory(prefix="aup-export-") as tmp:
            packed = os.path.join(tmp, "model.aup")
            bits = write_packed(packed)
            self.report_metrics(artifact_path=packed, example_input=example, quant_bits=bits, deployed_path=path)
        return path

    # ------------------------------------------------------------------ reporting
    def report_metrics(self, artifact_path: str | None = None, example_input: Any = None,
                       quant_bits: dict[str, Any] | None = None, deployed_path: str | None = None
                       ) -> dict[str, float] | None:
        """Inside an aup trial, send the measured metrics to the runner (trial attributes in the DB).

        Torch-side metrics come from :meth:`measure` (its eager latency as ``latency_ms_torch``);
        when a deployable artifact exists (``deployed_path``, the experiment's ``deploy`` setting,
        or by default a quantizer with onnxruntime installed) ``model_bytes`` and ``latency_ms`` are
        the deployed file's and ORT's, with ``deploy_agreement``. Outside a trial (no
        ``AUP_CHANNEL``) nothing is measured. A failure to measure is logged as a warning and never
        breaks the user's script.
        """
        from aup import channel, client

        if channel.channel_path() is None:
            return None
        self.reported = True
        example = self.example_input(example_input)
        try:
            with self._paused():
                metrics = self.measure(artifact_path, example_input, quant_bits)
        except Exception as exc:  # noqa: BLE001 - metrics must never kill a finished trial
            size_missing(f"measuring the compressed model failed: {type(exc).__name__}: {_one_line(exc)}")
            return None
        torch_latency = metrics.pop(M.LATENCY_MS, None)
        if torch_latency is not None:
            metrics[M.LATENCY_MS_TORCH] = torch_latency
        settings = self.effective_deploy()
        deployed = self._deployed_metrics(deployed_path, settings, example)
        if deployed:
            metrics[M.MODEL_BYTES_PACKED] = metrics.get(M.MODEL_BYTES)
            metrics.update(deployed)
            metrics.update(self._shipped_metrics())
        elif self.quantizes():
            if example is not None:
                print(self._no_latency_note(), flush=True)
        elif torch_latency is not None:
            metrics[M.LATENCY_MS] = torch_latency
        metrics = {**metrics, **self.extra_metrics(), **self.distill_metrics(),
                   **baseline_metrics(example, (settings or DeploySettings()) if deployed else None)}
        from aup.metrics import BASELINE_PREFIX, LATENCY_SIDE_BY_SIDE

        # the side-by-side latency and its baseline, from one run in this process, win over the cache
        metrics.update({k: v for k, v in deployed.items() if k.startswith(BASELINE_PREFIX) or k in LATENCY_SIDE_BY_SIDE})
        if not deployed and torch_latency is not None and not self.quantizes():
            metrics.update(self._torch_side_by_side(example))
        client.log_metrics(**metrics)
        return metrics

    def _torch_side_by_side(self, example: Any) -> dict[str, float]:
        """``latency_ms`` (torch) timed interleaved with the dense snapshot (``latency.interleaved``)."""
        from aup.metrics import LATENCY_MS, LATENCY_MS_TORCH

        from aup.compression.torch.deploy.latency import interleaved, torch_caller
        from aup.compression.torch.measure import LATENCY_THREADS

        artifact = baseline_artifact(example, None)
        if artifact is None or artifact[1] is self.model:
            return {}
        try:
            with self._paused(), torch_caller(self.model, example, LATENCY_THREADS) as model, \
                    torch_caller(artifact[1], example, LATENCY_THREADS) as dense:
                return interleaved(model, dense).metrics(LATENCY_MS, LATENCY_MS_TORCH)
        except Exception as exc:  # noqa: BLE001 - keep the latency measured alone
            warnings.warn(f"aup: no side-by-side latency ({type(exc).__name__}: {str(exc)[:200]})", stacklevel=3)
            return {}

    def _shipped_metrics(self) -> dict[str, Any]:
        """``weight_bits`` as the deployed file stores it, ``layer_bits_shipped`` and, when an asked
        precision could not be shipped, ``precision_note`` (also printed in the trial's log)."""
        record = getattr(self, "shipped_precision", None)
        if not record:
            return {}
        out: dict[str, Any] = {M.WEIGHT_BITS: record[M.WEIGHT_BITS],
                               M.LAYER_BITS_SHIPPED: {m: e["shipped"] for m, e in record["layers"].items()}}
        if record.get("note"):
            out[M.PRECISION_NOTE] = record["note"]
            print(f"aup: {record['note']}", flush=True)
        return out

    def report_size(self) -> dict[str, float] | None:
        """Inside an aup trial whose runner asks for it (``AUP_EARLY_SIZE``, set with
        multi-objective early stopping), send the size metrics known now (no latency), e.g. right
        after masks are computed or the model is shrunk, long before the trial's accuracy. (Not
        always: measuring writes an artifact, seconds for a large model.)

        Multi-objective early stopping ranks a trial at a rung by its intermediate score *and* its
        size as known then (``docs/search-efficiency.md``), so the size must reach the runner before
        the first epoch's result. This is the torch-side measurement of ``measure`` without latency;
        with a ``deploy`` setting whose file needs calibration (int8), ``model_bytes`` is left to the
        final report (an early number of another artifact would not compare with it). The final
        report at export or at the trial's end still runs and replaces these values.
        """
        from aup import channel, client
        from aup.compression.torch.measure import measure_model

        if not channel.early_size_wanted() or not _is_first_live(self):
            return None  # no early stopping by size, or a search pruner's inner compressor
        try:
            with self._paused():
                masks = None if getattr(self, "speedup_applied", False) else (self.get_masks() or None)
                metrics = measure_model(self.model, self.example_input(), masks=masks, latency=False,
                                        compressed_modules=self.compressed_module_names())
                settings = self.effective_deploy()
                if settings is not None:
                    metrics.pop(M.MODEL_BYTES_GZIP, None)
                    deployed = self._early_deployed_bytes(settings)
                    if deployed is None:
                        metrics.pop(M.MODEL_BYTES, None)
                    else:
                        metrics[M.MODEL_BYTES_PACKED], metrics[M.MODEL_BYTES] = metrics[M.MODEL_BYTES], deployed
        except Exception as exc:  # noqa: BLE001 - an early report is a hint; the final one still runs
            logger.debug("aup: no early size report: %s: %s", type(exc).__name__, exc)
            return None
        client.log_metrics(**metrics)
        return metrics

    def _early_deployed_bytes(self, settings: DeploySettings) -> float | None:
        """Bytes of the deployed ONNX file when it can be written now (no int8 calibration needed)."""
        if settings.int8 != "none" or self.example_input() is None:
            return None
        with tempfile.TemporaryDirectory(prefix="aup-early-") as tmp:
            path = self.write_deployed(os.path.join(tmp, "model.onnx"), settings)
            return float(os.path.getsize(path))

    def _no_latency_note(self) -> str:
        """Why a quantized model has no ``latency_ms``: the export failed, or ORT is missing."""
        from aup.compression.torch.deploy.settings import ort_available

        note = "aup: no latency_ms for this quantized model (timing its fake quantization in torch would not show " \
               "the deployed speed); "
        if ort_available() and self._deploy_failure:
            return note + f"export to ONNX failed: {self._deploy_failure}"
        return note + "install aup[deploy] (onnxruntime) to time its int8 ONNX artifact"

    def _deployed_metrics(self, path: str | None, settings: DeploySettings | None, example: Any) -> dict[str, float]:
        """``model_bytes``, ``latency_ms`` (ORT) and ``deploy_agreement`` of the deployed artifact."""
        if path is None and (settings is None or example is None):
            return {}
        try:
            with contextlib.ExitStack() as stack:
                if path is None:
                    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="aup-deploy-"))
                    path = self.write_deployed(os.path.join(tmp, "model.onnx"), settings, example)
                dense = baseline_artifact(example, settings or DeploySettings())
                return deployed_file_metrics(path, self.model, example, self.calibration_batches(), self._paused,
                                             baseline=dense[1] if dense else None)
        except Exception as exc:  # noqa: BLE001 - a model ONNX cannot express keeps its torch metrics
            self._deploy_failure = f"{type(exc).__name__}: {str(exc)[:300]}"
            warnings.warn(f"aup: no deployed-artifact metrics ({type(exc).__name__}: {str(exc)[:300]}); "
                          "reporting the torch model's", stacklevel=3)
            return {}

    def final_report(self) -> None:
        """Report once at the end of a trial when the script never exported (see ``report_at_trial_end``).

        A failure says why in the log and in the trial (``size_missing``), never silently."""
        if self.reported:
            return
        try:
            with tempfile.TemporaryDirectory(prefix="aup-final-") as tmp, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.export_model("model.aup", folder_name=tmp)
        except Exception as exc:  # noqa: BLE001 - the trial is finished; its result stands
            self.reported = True
            size_missing(f"exporting the model to measure it failed: {type(exc).__name__}: {_one_line(exc)}")


_UNSET: Any = object()


# The compressors alive in this trial process, in creation order. At the end of a trial the first
# one that never reported (the script's own compressor: search pruners create their inner ones
# later) measures and reports, so scripts that never export still record their size. The first one
# is held strongly: a script that creates its compressor inside ``main()`` and never exports
# (Auptimizer's mnist_amc.py) drops it before the exit hook runs, and a weak reference would leave
# the trial with no size and no word why. Later ones (a search's inner pruners) stay weak. Both are
# kept per trial channel: a process that runs several trials in turn (tests, a notebook) reports
# each trial's own compressor.
_live: list[tuple[str, weakref.ReferenceType]] = []
_first: dict[str, Compressor] = {}


def _register_live(compressor: Compressor) -> None:
    from aup import channel, client

    path = channel.channel_path()
    if path is None:
        return
    _first.setdefault(path, compressor)
    _live.append((path, weakref.ref(compressor)))
    client.on_trial_end(report_at_trial_end)


def _is_first_live(compressor: Compressor) -> bool:
    """Whether ``compressor`` is the trial's first (the script's own) live compressor."""
    from aup import channel

    return _first.get(channel.channel_path()) is compressor


def report_at_trial_end() -> None:
    """Measure and report the trial's compressor if nothing reported yet (print_result / exit hook)."""
    from aup import channel

    path = channel.channel_path()
    mine = [ref for where, ref in _live if where == path]
    if path is None or not mine:  # not in a trial, or this trial made no compressor (the runner says so)
        return
    alive = [c for c in (ref() for ref in mine) if c is not None]
    if any(c.reported for c in alive):
        return
    for compressor in alive:
        if "report_metrics" in vars(compressor):  # a pipeline stage: the pipeline reports
            continue
        compressor.final_report()
        return
    size_missing("no compressor of this trial was left to measure at its end")


def size_missing(reason: str) -> None:
    """One line in the trial's log and the reason in the trial (``size_missing``) when a compression
    trial ends without size metrics, so no trial lacks them silently."""
    import sys

    from aup import client

    print(f"aup: no size metrics for this trial: {reason}", file=sys.stderr, flush=True)
    client.log_metrics(**{SIZE_MISSING: reason})


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else "-"

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
