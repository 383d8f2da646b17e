"""One self-describing file per compressed model, and ``load_compressed`` to get it back.

Why: a pruned model's state_dict cannot be loaded into the user's class (the shapes changed, TP
issue 139, NNI 3093), and Auptimizer's export after ``apply_speedup`` even saved a mix of old and
shrunk layers.  The artifact therefore records the *architecture as it is now*: a ``torch.fx`` graph
traced from the (possibly shrunk) model, whose submodules are plain ``torch.nn`` layers, so it
reloads without the user's class.  Hugging Face models are stored as Hugging Face stores them
(class, config, weights, plus the per-layer sizes a shrink changed; :mod:`.hf_artifact`), so the
internals of a new transformers release do not matter.  Other models fx cannot trace
(data-dependent control flow) are described as a module tree whose classes must be importable.  The
weights are stored through :mod:`aup.compression.torch.artifact.storage` (k-bit packed where ``quant`` says
so, sparse where smaller), so the file size on disk is the honest ``model_bytes``.

File layout: a `safetensors <https://huggingface.co/docs/safetensors>`_ file.  Its JSON header's
``__metadata__`` holds ``format`` = "aup-compressed" and ``aup``: a JSON document with ``version``,
``kind`` ("fx" | "tree" | "hf"), ``structure`` (modules, see :mod:`.safe_codec`), ``graph`` (fx nodes),
``tensors`` ({tensor key: encoding, tensor fields by name}), ``meta`` (compressor, config, arch
changes, ``activation_quant`` specs re-attached on load) and ``example_input``.

Security: loading never unpickles.  The format is checked on the JSON header before any tensor is
read; structure and graph are rebuilt only from allowlisted classes, functions and tensor methods
(:mod:`.safe_codec`).  Version-1 artifacts (pickled) and any other pickle are refused unless
``trust=True`` is passed for a file from a trusted source.  ``torch.export.load`` was not used: it
falls back to ``torch.load(weights_only=False)`` for parts of its archive.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from typing import Any, Mapping

import torch
from torch import nn

from aup.compression.torch.artifact.hugging_face import build_hf, describe_hf, is_hf_model
from aup.compression.torch.artifact.codec import Decoder, Encoder, UnsafeArtifact
from aup.compression.torch.artifact.storage import decode_tensor, encode_tensor

__all__ = ["FORMAT", "VERSION", "save_artifact", "load_compressed", "read_artifact", "save_masks",
           "UnsafeArtifact"]

logger = logging.getLogger(__name__)

FORMAT = "aup-compressed"
VERSION = 2
_MAX_HEADER = 256 * 1024 * 1024

def save_artifact(path: str | os.PathLike, model: nn.Module, *, example_input: Any = None,
                  masks: Mapping[str, Mapping[str, torch.Tensor | None]] | None = None,
                  quant: Mapping[str, Mapping[str, Any]] | None = None, meta: Mapping[str, Any] | None = None,
                  verify: bool = True) -> dict[str, Any]:
    """Write ``model`` (as it is now) to ``path``; returns a summary (bytes, kind, encodings).

    ``masks`` (NNI format) are multiplied into the stored tensors; ``quant`` maps state_dict keys
    to ``{"bits", "scale", "zero_point"}`` (stored value ``(q - zero_point) * scale``).  The live
    model is not modified.  With ``verify`` (and an ``example_input``: a tensor, a tuple of
    positional inputs or a dict of keyword inputs) the file is reloaded and its output compared
    with the model's, so a broken artifact fails at export, not at deployment.
    """
    from safetensors.torch import save_file

    encoder, doc = _describe(model)
    info = dict(meta or {})
    info.setdefault("needs_class", doc["kind"] in ("tree", "hf"))
    keys = _state_keys(model, encoder)
    unknown = sorted(set(quant or {}) - set(keys))
    if unknown:
        raise ValueError(f"quant names tensors that are not in the model's state_dict: {unknown[:5]}")
    flat, encodings = _encode_tensors(encoder.tensors, keys, masks or {}, quant or {})
    doc.update(version=VERSION, tensors=encodings, meta=encoder.value(info, "meta"),
               example_input=_describe_input(example_input), torch_version=torch.__version__,
               configs=encoder.configs)
    for key in set(encoder.tensors) - set(encodings):  # tensors met while encoding meta
        flat[key], doc["tensors"][key] = encoder.tensors[key].contiguous().clone(), {"enc": "raw"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(flat, os.fspath(path), metadata={"format": FORMAT, "aup": json.dumps(doc, separators=(",", ":"))})
    summary = {"path": str(path), "bytes": os.path.getsize(path), "kind": doc["kind"],
               "encodings": _count_encodings(encodings)}
    if verify and example_input is not None:
        exact = not masks and not quant and not info.get("activation_quant")
        summary["max_abs_diff"] = _verify(path, model, example_input, exact)
    return summary


def read_artifact(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """The artifact's description (format checked first): kind, structure, meta, example_input, tensors.

    ``tensors`` maps each stored tensor to its decoded value.  No pickle is read unless ``trust``
    is given for a legacy (version 1) file.
    """
    doc = _read_header(path, trust=trust)
    if doc.get("legacy"):
        return doc["payload"]
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        raw = load_file(os.fspath(path))
    except (SafetensorError, OSError) as exc:
        raise UnsafeArtifact(f"{path}: damaged aup artifact ({_one_line(exc)})") from None
    try:
        tensors = _decode_tensors(doc.get("tensors", {}), raw)
        decoder = Decoder(tensors, doc.get("configs", []), trust=trust)
        doc["meta"] = decoder.value(doc.get("meta", {}))
    except UnsafeArtifact as exc:
        raise UnsafeArtifact(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise UnsafeArtifact(f"{path}: malformed aup artifact ({_one_line(exc)})") from None
    doc["decoded"] = tensors
    doc["decoder"] = decoder
    return doc


def load_compressed(path: str | os.PathLike, *, trust: bool = False) -> nn.Module:
    """Rebuild the saved model (eval mode) with its weights and activation quantization.

    Never unpickles: the model is rebuilt from the JSON description and the stored tensors, and a
    file that is not an aup artifact is refused before anything in it is interpreted.  A legacy
    (version 1, pickled) artifact loads only with ``trust=True``; pass that only for files you made
    or otherwise trust.  The returned module carries ``aup_meta`` (the artifact's meta dict).
    """
    doc = read_artifact(path, trust=trust)
    if "decoder" not in doc:
        return _load_legacy(doc)
    decoder: Decoder = doc["decoder"]
    try:
        if doc.get("kind") == "fx":
            root = decoder.module(doc["structure"])
            module: nn.Module = torch.fx.GraphModule(root, decoder.graph(doc["graph"], root))
        elif doc.get("kind") == "tree":
            module = decoder.module(doc["structure"])
        elif doc.get("kind") == "hf":
            module = build_hf(doc["structure"], decoder)
        else:
            raise UnsafeArtifact(f"unknown artifact kind {doc.get('kind')!r}")
    except UnsafeArtifact as exc:
        raise UnsafeArtifact(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RuntimeError) as exc:
        raise UnsafeArtifact(f"{path}: malformed aup artifact ({_one_line(exc)})") from None
    return _finish(module, doc["meta"])


def _finish(module: nn.Module, meta: dict[str, Any]) -> nn.Module:
    module.eval()
    specs = meta.get("activation_quant")
    if specs:
        from aup.compression.torch.quantization import attach_activation_quant

        module.aup_activation_quant = attach_activation_quant(module, specs)
    module.aup_meta = meta
    return module


def save_masks(path: str | os.PathLike, masks: Mapping[str, Mapping[str, torch.Tensor | None]]) -> None:
    """NNI's mask file: ``torch.save({module: {"weight": mask, "bias": mask_or_None}})`` (CPU copies)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({name: {key: (m.detach().cpu().clone() if m is not None else None) for key, m in entry.items()}
                for name, entry in masks.items()}, path)


# ----------------------------------------------------------------------------- structure


def _describe(model: nn.Module) -> tuple[Encoder, dict[str, Any]]:
    """Hugging Face config + weights; else an fx graph + leaf modules when fx traces the model and every
    piece is allowlisted; else a module tree."""
    hf_reason = None
    if is_hf_model(model):
        encoder = Encoder()
        try:
            return encoder, {"kind": "hf", "structure": describe_hf(model, encoder)}
        except Exception as exc:  # noqa: BLE001 - the class cannot rebuild it: try the generic forms
            hf_reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            logger.info("%s is not stored as config + weights (%s)", type(model).__name__, hf_reason)
    reason = None
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow, unsupported Python
        reason = f"torch.fx could not trace it ({type(exc).__name__}: {exc})".splitlines()[0][:300]
    else:
        encoder = Encoder()
        try:
            referenced = {str(n.target).split(".")[0] for n in traced.graph.nodes if n.op == "get_attr"}
            skip = {key for key in traced.__dict__ if key not in referenced}
            structure = encoder.module(traced, skip_attrs=skip)
            structure["cls"] = "torch.nn.modules.module:Module"
            return encoder, {"kind": "fx", "structure": structure, "graph": encoder.graph(traced.graph, traced)}
        except UnsafeArtifact as exc:
            reason = f"its traced graph uses something outside the allowlist ({exc})"
    encoder = Encoder()
    try:
        structure = encoder.module(model)
    except UnsafeArtifact as exc:
        prefix = f"as config + weights {hf_reason}, " if hf_reason else ""
        raise ValueError(f"cannot export {type(model).__name__}: {prefix}{reason}, and as a module tree {exc}"
                         ) from None
    logger.info("exporting %s as a module tree (%s): its classes must be importable when loading",
                type(model).__name__, reason)
    return encoder, {"kind": "tree", "structure": structure, "fx_error": reason}


def _state_keys(model: nn.Module, encoder: Encoder) -> dict[str, str]:
    """``{state_dict key: tensor key}`` (tied weights map several state keys to one tensor)."""
    by_id = {id(obj): key for obj, key in encoder._tensor_keys.values()}
    keys = {}
    for name, value in model.state_dict(keep_vars=True).items():
        if id(value) in by_id:
            keys[name] = by_id[id(value)]
    return keys


def _encode_tensors(tensors: Mapping[str, torch.Tensor], keys: Mapping[str, str],
                    masks: Mapping[str, Mapping[str, Any]], quant: Mapping[str, Mapping[str, Any]]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Masked, quantized, sparse encodings of every tensor: (flat tensors for the file, JSON per tensor)."""
    state_of = {}
    for state_key, tensor_key in keys.items():
        state_of.setdefault(tensor_key, state_key)
    flat: dict[str, torch.Tensor] = {}
    encodings: dict[str, dict] = {}
    for key, value in tensors.items():
        state_key = state_of.get(key, key)
        module_name, _, attr = state_key.rpartition(".")
        mask = masks.get(module_name, {}).get(attr)
        if mask is not None:
            value = value * mask.to(device=value.device, dtype=value.dtype)
        spec = quant.get(state_key)
        if spec is not None:
            enc = encode_tensor(value, bits=int(spec["bits"]), scale=spec["scale"],
                                zero_point=spec.get("zero_point", 0.0), group_axis=spec.get("group_axis", 1))
        else:
            enc = encode_tensor(value)
        doc = {}
        for field, item in enc.items():
            if isinstance(item, torch.Tensor):
                flat[f"{key}#{field}"] = item.contiguous()
                doc[field] = {"__tensor__": f"{key}#{field}"}
            else:
                doc[field] = item
        encodings[key] = doc
    return flat, encodings


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _decode_tensors(encodings: Mapping[str, Any], raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, doc in encodings.items():
        if not isinstance(doc, dict):
            raise UnsafeArtifact(f"malformed tensor entry {key!r}")
        if doc.get("enc") == "raw":
            if key not in raw:
                raise UnsafeArtifact(f"tensor {key!r} is missing from the artifact")
            out[key] = raw[key]
            continue
        enc = {}
        for field, item in doc.items():
            if isinstance(item, dict) and "__tensor__" in item:
                if item["__tensor__"] not in raw:
                    raise UnsafeArtifact(f"tensor {item['__tensor__']!r} is missing from the artifact")
                enc[field] = raw[item["__tensor__"]]
            else:
                enc[field] = item
        try:
            out[key] = decode_tensor(enc)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UnsafeArtifact(f"tensor {key!r} cannot be decoded ({_one_line(exc)})") from None
    return out


# ----------------------------------------------------------------------------- reading


def _read_header(path: str | os.PathLike, *, trust: bool) -> dict[str, Any]:
    """The aup document from the safetensors JSON header, checked before any tensor is read."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = fh.read(size) if 2 <= size <= _MAX_HEADER else b""
        file_size = os.fstat(fh.fileno()).st_size
    if 2 <= size <= _MAX_HEADER and len(header) < size and header[:1] in (b"", b"{"):
        raise UnsafeArtifact(f"{path}: truncated or damaged aup artifact (its header declares {size} bytes, "
                             f"the file holds {file_size - 8})")
    meta, header_doc = None, None
    if header[:1] == b"{":
        try:
            header_doc = json.loads(header.decode("utf-8"))
            meta = header_doc.get("__metadata__")
        except (UnicodeDecodeError, ValueError, AttributeError):
            meta = None
    if isinstance(meta, dict) and meta.get("format") == FORMAT:
        _check_data_size(path, header_doc, file_size - 8 - size)
        try:
            doc = json.loads(meta["aup"])
        except (KeyError, TypeError, ValueError):
            raise UnsafeArtifact(f"{path}: aup artifact with a malformed description") from None
        if not isinstance(doc, dict):
            raise UnsafeArtifact(f"{path}: aup artifact with a malformed description")
        if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
            raise ValueError(f"{path}: artifact version {doc.get('version')} is newer than this aup "
                             f"(reads up to {VERSION}); upgrade aup")
        return doc
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        if trust:
            return {"legacy": True, "payload": _read_legacy(path)}
        raise UnsafeArtifact(f"{path}: not an aup compressed-model artifact (a pickle/torch.save file, maybe a legacy "
                             f"aup artifact); refused because loading it could run code - pass trust=True only for "
                             f"a file you trust")
    if len(head) < 8:
        raise UnsafeArtifact(f"{path}: not an aup compressed-model artifact (only {len(head)} bytes: empty or "
                             f"truncated)")
    raise UnsafeArtifact(f"{path}: not an aup compressed-model artifact (expected format {FORMAT!r})")


def _check_data_size(path: str | os.PathLike, header: dict[str, Any], present: int) -> None:
    """The tensors' byte ranges in the safetensors header end exactly where the file ends."""
    ends = [entry.get("data_offsets") for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict)]
    needed = max((e[1] for e in ends if isinstance(e, list) and len(e) == 2 and isinstance(e[1], int)), default=0)
    if needed != present:
        raise UnsafeArtifact(f"{path}: truncated or damaged aup artifact (its tensors need {needed} bytes, "
                             f"the file holds {present})")


def _read_legacy(path: str | os.PathLike) -> dict[str, Any]:
    """Version-1 artifact (pickled); only reached with ``trust=True``."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UnsafeArtifact(f"{path}: not an aup compressed-model artifact (expected format {FORMAT!r})")
    return payload


def _load_legacy(payload: dict[str, Any]) -> nn.Module:
    module: nn.Module = payload["module"].to_empty(device="cpu")
    module.load_state_dict({key: decode_tensor(enc) for key, enc in payload["tensors"].items()}, strict=True)
    return _finish(module, payload.get("meta", {}))


def _describe_input(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
    if isinstance(x, (tuple, list)):
        return [_describe_input(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): _describe_input(v) for k, v in x.items()}
    return None


def _count_encodings(tensors: Mapping[str, dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for enc in tensors.values():
        counts[enc["enc"]] = counts.get(enc["enc"], 0) + 1
    return counts


def call_model(model: nn.Module, example_input: Any) -> Any:
    """``model(x)``, ``model(*x)`` for a tuple/list, ``model(**x)`` for a dict of keyword inputs."""
    if isinstance(example_input, Mapping):
        return model(**example_input)
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    return model(example_input)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (tensor, tuple/list, dict or Hugging Face ``ModelOutput``), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in output_tensors(v)]
    return []


@torch.no_grad()
def _verify(path: str | os.PathLike, model: nn.Module, example_input: Any, exact: bool) -> float:
    """Reload the file and compare outputs with the live model; must match unless masks/quant apply."""
    loaded = load_compressed(path)
    was_training = model.training
    model.eval()
    try:
        expected = output_tensors(call_model(model, example_input))
        got = output_tensors(call_model(loaded, example_input))
    finally:
        model.train(was_training)
    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got)):
        raise RuntimeError(f"artifact {path} does not reproduce the model (outputs differ in number or shape)")
    diff = max((float((e.float() - g.float()).abs().max()) for e, g in zip(expected, got) if e.numel()),
               default=0.0)
    if exact and diff > 1e-5:
        raise RuntimeError(f"artifact {path} does not reproduce the model (max abs diff {diff:.3g})")
    return diff
