"""Distillation from the dense model while a compressed model fine-tunes (Hinton et al. 2015).

The teacher is the dense model as it was when the compressor was built: the snapshot the baseline
already holds (``baseline.dense_snapshot``: one copy per trial process, shared with the baseline
measurement, never a second one). It stays in eval mode, its parameters do not require gradients,
and its forward pass runs under ``torch.inference_mode``, so it costs one forward pass per batch
and no activation memory for backward.

Loss, for student logits ``s``, teacher logits ``t`` and temperature ``T``::

    loss = (1 - alpha) * label_loss + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
           + layer_weight * mean over ``layers`` of MSE(student output, teacher output)

(``T^2`` keeps the soft term's gradient on the scale of the label loss; the KL is averaged over the
batch, ``reduction="batchmean"``.)

Intermediate layers of a shrunk student (``apply_speedup`` removed channels): rule, in order,

1. same shape: plain MSE;
2. the student has fewer channels (dim 1) and the pruner recorded which output channels of that
   module it kept (``Compressor.kept_channels``, taken at ``apply_speedup``): MSE against those
   channels of the teacher's output (the same filters, no projection to learn);
3. otherwise the layer is skipped, with one warning naming it (no learned projection: it would be
   new parameters the user's optimizer does not know about).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from aup.compression.distill_spec import DistillOptions

__all__ = ["Distiller", "soft_kl", "logits_of"]


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor, ``ModelOutput.logits`` (Hugging Face), a dict's
    ``logits`` entry, else the first tensor of a tuple."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    from aup.compression.torch.measure import first_tensor

    return first_tensor(outputs)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch (every position of a
    sequence counts as a sample: the class dimension is the last)."""
    classes = student_logits.shape[-1]
    s = F.log_softmax(student_logits.reshape(-1, classes).float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature ** 2


class Distiller:
    """The teacher, the options and the forward hooks on both models; see the module docstring."""

    def __init__(self, teacher: nn.Module, student: nn.Module, options: DistillOptions,
                 kept_channels: Callable[[], Mapping[str, torch.Tensor]] = dict) -> None:
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.student = student
        self.options = options
        self.kept_channels = kept_channels
        self._student_out: dict[str, torch.Tensor] = {}
        self._teacher_out: dict[str, torch.Tensor] = {}
        self._skipped: set[str] = set()
        self._hooks = [*self._hook(student, options.layers.keys(), self._student_out, "student"),
                       *self._hook(teacher, options.layers.values(), self._teacher_out, "teacher (dense model)")]

    @staticmethod
    def _hook(model: nn.Module, names: Any, store: dict[str, torch.Tensor], who: str) -> list[Any]:
        modules = dict(model.named_modules())
        handles = []
        for name in dict.fromkeys(names):
            if name not in modules:
                raise ValueError(f"compression_distill.layers: the {who} has no module {name!r}")

            def keep(_module: nn.Module, _inputs: Any, out: Any, name: str = name) -> None:
                store[name] = logits_of(out)
            handles.append(modules[name].register_forward_hook(keep))
        return handles

    def remove(self) -> None:
        """Detach the forward hooks (the models are left as they were)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def teacher_forward(self, inputs: Any) -> torch.Tensor:
        """The teacher's logits for ``inputs`` (tensor, tuple of arguments, or keyword dict), no grad."""
        if self.teacher.training:
            self.teacher.eval()  # a user's model.train() on a shared module must not switch the teacher
        with torch.inference_mode():
            if isinstance(inputs, Mapping):
                out = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"})
            elif isinstance(inputs, (tuple, list)):
                out = self.teacher(*inputs)
            else:
                out = self.teacher(inputs)
            logits = logits_of(out)
        # inference tensors cannot be saved for the student's backward: normal copies (in place: the
        # hooks hold this dict)
        for name, value in list(self._teacher_out.items()):
            self._teacher_out[name] = value.clone()
        return logits.clone()

    def loss(self, outputs: Any, label_loss: torch.Tensor, inputs: Any) -> torch.Tensor:
        """The distillation loss of one batch: ``outputs`` is the student's output for ``inputs``."""
        opts = self.options
        if not opts.active:
            return label_loss
        teacher_logits = self.teacher_forward(inputs)
        total = (1.0 - opts.alpha) * label_loss
        if opts.alpha > 0:
            total = total + opts.alpha * soft_kl(logits_of(outputs), teacher_logits, opts.temperature)
        layer_terms = [term for term in (self._layer_term(s, t) for s, t in opts.layers.items()) if term is not None]
        if layer_terms and opts.layer_weight > 0:
            total = total + opts.layer_weight * torch.stack(layer_terms).mean()
        self._student_out.clear()
        self._teacher_out.clear()
        return total

    def _layer_term(self, student_name: str, teacher_name: str) -> torch.Tensor | None:
        s = self._student_out.get(student_name)
        t = self._teacher_out.get(teacher_name)
        if s is None or t is None:
            self._skip(student_name, "it produced no output in this forward pass (replaced by a shrink?)")
            return None
        if s.shape != t.shape:
            kept = self.kept_channels().get(student_name)
            if kept is not None and t.dim() > 1 and len(kept) == s.shape[1]:
                t = t.index_select(1, kept.to(t.device))
            if s.shape != t.shape:
                self._skip(student_name, f"student output {tuple(s.shape)} vs teacher {tuple(t.shape)}")
                return None
        return F.mse_loss(s.float(), t.float())

    def _skip(self, name: str, why: str) -> None:
        """One warning per skipped layer (see the module docstring's rule)."""
        if name not in self._skipped:
            self._skipped.add(name)
            warnings.warn(f"aup: distillation skips layer {name!r}: {why} (see aup.compression.torch.distill)",
                          stacklevel=5)
