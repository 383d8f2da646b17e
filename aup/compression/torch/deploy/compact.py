"""Lossless size passes over an exported ONNX graph: what the file carries that ONNX Runtime does not need.

Why: ORT's quantization pre-processing saves every attribute it knows, defaults included
(``Reshape.allowzero=0``, ``Shape.start=0``, ``LayerNormalization``'s ``axis``/``epsilon``/``stash_type``,
``MatMulNBits``' ``accuracy_level``/``weight_prepacked``), declares nine operator domains of which a
graph uses two, and the exporter writes the same small constant (a shape index, a zero point) under
several names. None of that changes what the graph computes; on the digits transformer it was
1-2 kB of a 29-48 kB file. Called by :func:`.onnx_export._compact` on every exported file (dense,
int8 and mixed alike, so ratios between them stay fair).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Collection

__all__ = ["drop_default_attributes", "drop_unused_opsets", "share_duplicate_initializers"]


@lru_cache(maxsize=1)
def _ort_schemas() -> dict[tuple[str, str], list[tuple[int, dict[str, bytes]]]]:
    """``{(domain, op): [(since_version, {attribute: serialized default})]}`` as the installed ORT knows them
    (standard and contrib operators alike); empty without onnxruntime."""
    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import get_all_operator_schema
    except ImportError:  # pragma: no cover - deploy extra without onnxruntime
        return {}
    table: dict[tuple[str, str], list[tuple[int, dict[str, bytes]]]] = {}
    for schema in get_all_operator_schema():
        defaults = {name: attr._default_value for name, attr in schema.attributes.items() if attr._default_value}
        domain = "" if schema.domain == "ai.onnx" else schema.domain
        table.setdefault((domain, schema.name), []).append((schema.since_version, defaults))
    for versions in table.values():
        versions.sort(key=lambda item: item[0])
    return table


def _defaults(domain: str, op: str, opset: int) -> dict[str, Any]:
    """The attribute defaults of ``op`` at the model's ``opset`` of its domain (parsed AttributeProtos)."""
    from onnx import AttributeProto, helper

    versions = [defaults for since, defaults in _ort_schemas().get((domain, op), []) if since <= opset]
    if not versions:
        return {}
    parsed = {}
    for name, raw in versions[-1].items():
        proto = AttributeProto()
        proto.ParseFromString(raw)
        parsed[name] = helper.get_attribute_value(proto)
    return parsed


def drop_default_attributes(model: Any) -> int:
    """Remove node attributes whose value equals the operator's default (absent means default in ONNX);
    returns how many were removed."""
    from onnx import helper

    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    removed = 0
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        defaults = _defaults(domain, node.op_type, opsets.get(domain, 1))
        for attr in list(node.attribute):
            if attr.name in defaults and helper.get_attribute_value(attr) == defaults[attr.name]:
                node.attribute.remove(attr)
                removed += 1
    return removed


def drop_unused_opsets(model: Any) -> None:
    """Keep the operator domains the graph's nodes use (and the default one)."""
    used = {"" if n.domain == "ai.onnx" else n.domain for n in model.graph.node} | {""}
    for opset in list(model.opset_import):
        if ("" if opset.domain == "ai.onnx" else opset.domain) not in used:
            model.opset_import.remove(opset)


def share_duplicate_initializers(graph: Any, protected: Collection[str] = ()) -> int:
    """Store equal constant tensors once: an initializer equal (type, shape and bytes) to an earlier one is
    removed and its readers read that one. ``protected`` names (the model's parameters, graph inputs and
    outputs) are never removed, so every parameter stays findable by name. Returns how many were removed."""
    from onnx import numpy_helper

    keep = set(protected) | {v.name for v in graph.input} | {v.name for v in graph.output}
    first: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    renamed: dict[str, str] = {}
    ordered = sorted(graph.initializer, key=lambda init: init.name not in keep)  # protected names win
    for init in ordered:
        key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
        if key in first and init.name not in keep:
            renamed[init.name] = first[key]
        else:
            first.setdefault(key, init.name)
    if not renamed:
        return 0
    for init in list(graph.initializer):
        if init.name in renamed:
            graph.initializer.remove(init)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    return len(renamed)
