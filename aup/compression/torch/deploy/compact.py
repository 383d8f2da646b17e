"""Lossless size passes over an exported ONNX graph: what the file carries that ONNX Runtime does not need.

Why: the TorchScript exporter computes every ``Reshape`` target of an attention block at run time from
``Shape`` of a tensor whose batch is dynamic (:func:`fold_shape_arithmetic`); ORT's quantization
pre-processing saves every attribute it knows, defaults included (``Reshape.allowzero=0``,
``Shape.start=0``, ``LayerNormalization``'s ``axis``/``epsilon``/``stash_type``, ``MatMulNBits``'
``accuracy_level``/``weight_prepacked``) and declares nine operator domains of which a graph uses two;
the exporter writes the same small constant (a shape index, a zero point) under several names. None of
that changes what the graph computes; on the digits transformer it was about 8 kB of its 48 kB int8
file and 7 kB of its 29 kB all-4-bit file (docs/mixed-precision.md). Called by
:func:`.onnx_export._compact` on every exported file (dense, int8 and mixed alike, so ratios between
them stay fair).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

__all__ = ["drop_default_attributes", "drop_unused_opsets", "fold_shape_arithmetic", "share_duplicate_initializers"]


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


def share_duplicate_initializers(graph: Any, protected: Iterable[str] = ()) -> int:
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


_FOLD_BATCHES = (1, 2, 5)
_FOLD_MAX_ELEMENTS = 16  # a folded shape value is a few integers; a batch-free mask is not stored instead


def fold_shape_arithmetic(model: Any) -> int:
    """Replace the shape computations that do not depend on the batch size by constants; returns how many
    nodes went.

    Why: the TorchScript exporter computes every ``Reshape`` target of an attention block at run time
    from ``Shape`` of its input (batch is dynamic), some 80 small nodes on a two-layer encoder; ORT's
    constant folding cannot fold ``Shape`` of a tensor whose batch is unknown. How: the values derived
    from ``Shape``/``Size`` (through nodes reading only such values and constants) are computed by ORT
    at batch sizes 1, 2 and 5; a value equal at all three becomes an initializer, and a ``Reshape``
    target that differs in one position only (and holds no -1 or 0 of its own) becomes a constant with
    ``-1`` there (ONNX infers it from the element count, so it is the batch-dependent size). The
    rewritten graph must give the original's outputs at those batch sizes (:func:`_same`), else the
    model is left as it was.
    """
    import copy

    from onnx import numpy_helper

    derived = _shape_derived(model.graph)
    if not derived:
        return 0
    reshaped = {n.input[0] for n in model.graph.node if n.op_type == "Reshape" and n.input[1] in derived}
    try:
        values = _evaluate(model, sorted(derived | reshaped))
    except Exception:  # noqa: BLE001 - an input ORT cannot build or a graph it cannot run: leave it alone
        return 0
    folded = copy.deepcopy(model)
    constants: dict[str, Any] = {}
    for name in sorted(derived):
        runs = [v[name] for v in values]
        if runs[0].size <= _FOLD_MAX_ELEMENTS and _constant(runs):
            constants[name] = runs[0]
    constants.update(_reshape_targets(folded.graph, derived, constants, values))
    producers = {out: node for node in folded.graph.node for out in node.output}
    for name, value in constants.items():
        if name in producers:  # its node is now dead and goes below
            producers[name].output[list(producers[name].output).index(name)] = f"{name}_unused"
        folded.graph.initializer.append(numpy_helper.from_array(value, name))
    removed = _drop_dead_nodes(folded.graph)
    if not removed:
        return 0
    outputs = [o.name for o in model.graph.output]
    original = [{name: run[name] for name in outputs} for run in values]  # the same feeds, already run
    try:
        same = all(_same(a, b) for a, b in zip(original, _evaluate(folded, [])))
    except Exception:  # noqa: BLE001
        same = False
    if not same:
        return 0
    model.CopyFrom(folded)
    return removed


def _constant(runs: list[Any]) -> bool:
    """The same array at every batch size."""
    return all(r.shape == runs[0].shape and (r == runs[0]).all() for r in runs)


def _reshape_targets(graph: Any, derived: set[str], constants: dict[str, Any], values: list[dict[str, Any]]
                     ) -> dict[str, Any]:
    """``{new initializer: target}`` for the ``Reshape`` nodes (rewired in place) whose computed target
    varies with the batch in exactly one position: that position becomes -1 (inferred from the element
    count), or 0 (copied from the input's dimension there, ``allowzero`` 0) when the target already has
    its -1, as ``x.view(x.size(0), -1)`` writes."""
    targets: dict[str, Any] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in derived or node.input[1] in constants:
            continue
        runs = [v[node.input[1]] for v in values]
        if runs[0].ndim != 1 or not _constant([r < 0 for r in runs]) or any((r == 0).any() for r in runs):
            continue
        differs = [i for i in range(runs[0].size) if any(r[i] != runs[0][i] for r in runs)]
        if len(differs) != 1:
            continue
        at, target = differs[0], runs[0].copy()
        copies = not any(a.name == "allowzero" and a.i for a in node.attribute) and all(
            node.input[0] in v and v[node.input[0]].ndim > at and v[node.input[0]].shape[at] == r[at]
            for v, r in zip(values, runs))
        if (target < 0).sum() == 0:
            target[at] = -1
        elif (target < 0).sum() == 1 and copies:
            target[at] = 0
        else:
            continue
        name = f"{node.input[1]}_folded"
        targets[name] = target
        node.input[1] = name
    return targets


def _shape_derived(graph: Any) -> set[str]:
    """Tensors computed from ``Shape``/``Size`` outputs and constants only (initializers, ``Constant``
    nodes): their values depend on the inputs' shapes, not on their data."""
    constant = {init.name for init in graph.initializer} | {""}
    derived: set[str] = set()
    for node in graph.node:  # nodes are in topological order
        if node.op_type in ("Shape", "Size"):
            derived.update(node.output)
        elif all(i in constant for i in node.input):  # Constant nodes, and what reads only constants
            constant.update(node.output)
        elif all(i in derived or i in constant for i in node.input) and any(i in derived for i in node.input):
            derived.update(o for o in node.output if o)
    return derived


def _evaluate(model: Any, extra: list[str]) -> list[dict[str, Any]]:
    """``{tensor: value}`` of the graph outputs and the ``extra`` tensors (graph inputs among them: the
    feeds) at each of :data:`_FOLD_BATCHES` (float inputs random, integer and boolean inputs ones)."""
    import copy

    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = copy.deepcopy(model)
    outputs = [o.name for o in probe.graph.output]
    inputs = {value.name for value in probe.graph.input}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in extra
                              if name not in outputs and name not in inputs)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    results = []
    for batch in _FOLD_BATCHES:
        feeds = {}
        for value in probe.graph.input:
            if value.name in {init.name for init in probe.graph.initializer}:
                continue
            tensor = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else batch for d in tensor.shape.dim]
            dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            floating = tensor.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
            feeds[value.name] = rng.standard_normal(shape).astype(dtype) if floating else np.ones(shape, dtype)
        results.append({**(feeds if extra else {}), **dict(zip(names, session.run(names, feeds)))})
    return results


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal outputs: integers exactly, floats to 1e-5 of their largest magnitude (a constant scale lets ORT
    fuse a ``Mul`` into the ``MatMul`` before it, which rounds differently; a wrong shape is far off)."""
    import numpy as np

    def close(x: Any, y: Any) -> bool:
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.dtype.kind != "f":
            return bool(np.array_equal(x, y))
        scale = float(np.nanmax(np.abs(x))) if x.size and not np.isnan(x).all() else 0.0
        return bool(np.allclose(x, y, rtol=0, atol=1e-5 * max(scale, 1e-30), equal_nan=True))

    return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)


def _drop_dead_nodes(graph: Any) -> int:
    """Remove nodes no graph output depends on, then initializers nothing reads; returns the nodes removed."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(keep))
    needed.update(v.name for v in graph.input)  # an initializer listed as an input stays its default value
    for init in list(graph.initializer):
        if init.name not in needed:
            graph.initializer.remove(init)
    return removed
