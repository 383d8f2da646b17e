"""One self-describing file per compressed model, and ``load_compressed`` to get it back.

Why: a pruned model's state_dict cannot be loaded into the user's class (the shapes changed, TP
issue 139, NNI 3093), and Auptimizer's export after ``apply_speedup`` even saved a mix of old and
shrunk layers.  The artifact therefore records the *architecture as it is now*: a ``torch.fx``
GraphModule traced from the (possibly shrunk) model, whose submodules are plain ``torch.nn``
layers, so it reloads without the user's class.  The weights are stored separately through
:mod:`aup.compression.torch.storage` (k-bit packed where ``quant`` says so, sparse where smaller),
so the file size on disk is the honest ``model_bytes``.  If fx cannot trace the model (data-dependent
control flow), the module itself is pickled instead and ``meta["needs_class"]`` says that the
user's class must be importable when loading.

File layout (``torch.save`` of a dict): ``format`` = "aup-compressed", ``version``, ``kind``
("fx" | "pickle"), ``module`` (the architecture with weights on the meta device, i.e. no data),
``tensors`` ({state_dict key: encoding}), ``meta`` (compressor, config, arch changes, ...,
``activation_quant`` specs re-attached on load), ``example_input`` (shape and dtype).

Security: loading unpickles Python objects (``torch.load(weights_only=False)``) because the
architecture is code; only load artifacts you trust, as with any pickle.
"""
from __future__ import annotations

import copy
import io
import logging
import os
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import nn

from .storage import decode_tensor, encode_tensor

__all__ = ["FORMAT", "VERSION", "save_artifact", "load_compressed", "read_artifact", "save_masks"]

logger = logging.getLogger(__name__)

FORMAT = "aup-compressed"
VERSION = 1
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def save_artifact(path: str | os.PathLike, model: nn.Module, *, example_input: Any = None,
                  masks: Mapping[str, Mapping[str, torch.Tensor | None]] | None = None,
                  quant: Mapping[str, Mapping[str, Any]] | None = None, meta: Mapping[str, Any] | None = None,
                  verify: bool = True) -> dict[str, Any]:
    """Write ``model`` (as it is now) to ``path``; returns a summary (bytes, kind, encodings).

    ``masks`` (NNI format) are multiplied into the stored tensors; ``quant`` maps state_dict keys
    to ``{"bits", "scale", "zero_point"}`` (stored value ``(q - zero_point) * scale``).  The live
    model is not modified.  With ``verify`` (and an ``example_input``) the file is reloaded and its
    output compared with the model's, so a broken artifact fails at export, not at deployment.
    """
    structure, kind, reason = _structure(model)
    tensors = _encode_state(structure, model, masks or {}, quant or {})
    info = dict(meta or {})
    info.setdefault("needs_class", kind == "pickle")
    if reason:
        info["fx_error"] = reason
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "module": structure, "tensors": tensors,
               "meta": info, "example_input": _describe_input(example_input),
               "torch_version": torch.__version__}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        torch.save(payload, path)
    except Exception as exc:
        if kind == "fx":
            raise
        raise ValueError(f"cannot export {type(model).__name__}: torch.fx could not trace it ({reason}) and the "
                         f"module cannot be pickled ({exc}); define its class at module level") from None
    summary = {"path": str(path), "bytes": os.path.getsize(path), "kind": kind,
               "encodings": _count_encodings(tensors)}
    if verify and example_input is not None:
        exact = not masks and not quant and not info.get("activation_quant")
        summary["max_abs_diff"] = _verify(path, model, example_input, exact)
    return summary


def read_artifact(path: str | os.PathLike) -> dict[str, Any]:
    """The raw artifact dict (format checked).  Only for trusted files: see the module docstring."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an aup compressed-model artifact (expected format {FORMAT!r})")
    if payload.get("version", 0) > VERSION:
        raise ValueError(f"{path}: artifact version {payload['version']} is newer than this aup "
                         f"(reads up to {VERSION}); upgrade aup")
    return payload


def load_compressed(path: str | os.PathLike) -> nn.Module:
    """Rebuild the saved model (eval mode) with its weights and activation quantization.

    Uses ``torch.load(weights_only=False)`` on aup's own format: load only trusted files.
    The returned module carries ``aup_meta`` (the artifact's meta dict).
    """
    payload = read_artifact(path)
    module: nn.Module = payload["module"]
    module = module.to_empty(device="cpu")
    state = {key: decode_tensor(enc) for key, enc in payload["tensors"].items()}
    module.load_state_dict(state, strict=True)
    module.eval()
    meta = payload.get("meta", {})
    specs = meta.get("activation_quant")
    if specs:
        from .quantization import attach_activation_quant

        module.aup_activation_quant = attach_activation_quant(module, specs)
    module.aup_meta = meta
    return module


def save_masks(path: str | os.PathLike, masks: Mapping[str, Mapping[str, torch.Tensor | None]]) -> None:
    """NNI's mask file: ``torch.save({module: {"weight": mask, "bias": mask_or_None}})`` (CPU copies)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({name: {key: (m.detach().cpu().clone() if m is not None else None) for key, m in entry.items()}
                for name, entry in masks.items()}, path)


# ----------------------------------------------------------------------------- structure


def _structure(model: nn.Module) -> tuple[nn.Module, str, str | None]:
    """A data-free copy of the architecture: an fx GraphModule if tracing works, else the module."""
    reason = None
    try:
        traced: nn.Module = torch.fx.symbolic_trace(model)
        for node in traced.graph.nodes:  # type annotations break GraphModule pickling in torch 2.13
            node.type = None
        traced.recompile()
        kind = "fx"
    except Exception as exc:  # data-dependent control flow, unsupported Python: pickle the module
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        logger.info("torch.fx could not trace %s (%s); the artifact pickles the module, so its class must be "
                    "importable when loading", type(model).__name__, reason)
        traced, kind = model, "pickle"
    return _meta_copy(traced), kind, reason


def _meta_copy(module: nn.Module) -> nn.Module:
    """Deep copy with every parameter and buffer on the meta device and without hooks."""
    memo: dict[int, Any] = {}
    for sub in module.modules():
        for name, p in sub._parameters.items():
            if p is not None and id(p) not in memo:
                memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
        for name, b in sub._buffers.items():
            if b is not None and id(b) not in memo:
                memo[id(b)] = torch.empty_like(b, device="meta")
        for attr in _HOOK_DICTS:
            hooks = getattr(sub, attr, None)
            if hooks is not None and id(hooks) not in memo:
                memo[id(hooks)] = OrderedDict()
    clone = copy.deepcopy(module, memo)
    clone.eval()
    return clone


def _encode_state(structure: nn.Module, model: nn.Module, masks: Mapping[str, Mapping[str, Any]],
                  quant: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Encode the live model's tensors under the structure's state_dict keys."""
    live = dict(model.state_dict(keep_vars=True))
    unknown = sorted(set(quant) - set(live))
    if unknown:
        raise ValueError(f"quant names tensors that are not in the model's state_dict: {unknown[:5]}")
    tensors: dict[str, dict] = {}
    for key in structure.state_dict(keep_vars=True):
        value = live[key].detach()
        module_name, _, attr = key.rpartition(".")
        mask = masks.get(module_name, {}).get(attr)
        if mask is not None:
            value = value * mask.to(device=value.device, dtype=value.dtype)
        spec = quant.get(key)
        if spec is not None:
            tensors[key] = encode_tensor(value, bits=int(spec["bits"]), scale=spec["scale"],
                                         zero_point=spec.get("zero_point", 0.0))
        else:
            tensors[key] = encode_tensor(value)
    return tensors


def _describe_input(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
    if isinstance(x, (tuple, list)):
        return [_describe_input(v) for v in x]
    return None


def _count_encodings(tensors: Mapping[str, dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for enc in tensors.values():
        counts[enc["enc"]] = counts.get(enc["enc"], 0) + 1
    return counts


@torch.no_grad()
def _verify(path: str | os.PathLike, model: nn.Module, example_input: Any, exact: bool) -> float:
    """Reload the file and compare outputs with the live model; must match unless masks/quant apply."""
    loaded = load_compressed(path)
    was_training = model.training
    model.eval()
    try:
        args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
        expected = model(*args)
        got = loaded(*args)
    finally:
        model.train(was_training)
    if not isinstance(expected, torch.Tensor) or not isinstance(got, torch.Tensor):
        return 0.0
    diff = float((expected - got).abs().max()) if expected.numel() else 0.0
    if exact and diff > 1e-5:
        raise RuntimeError(f"artifact {path} does not reproduce the model (max abs diff {diff:.3g})")
    return diff


def artifact_bytes(payload: Mapping[str, Any]) -> int:
    """Size ``torch.save`` gives a payload (for in-memory size checks)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.tell()
