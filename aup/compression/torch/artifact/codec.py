"""JSON description of a model's structure that loads without unpickling anything.

Why: a pickled module runs arbitrary code when it is loaded (``__reduce__``), so aup's artifact
describes the architecture as data instead.  Three kinds of things are described:

- **modules**: class (``module:qualname``), the plain attributes of the instance (numbers, strings,
  tuples, dtypes, functions from an allowlist, Hugging Face configs), its parameters and buffers
  (by key into the tensor store; a parameter shared by two modules, e.g. tied embeddings, is stored
  once and re-tied on load) and its children.  Rebuilding creates the instance with
  ``cls.__new__`` and ``nn.Module.__init__`` and sets those attributes: the class's ``__init__`` is
  not called and no code comes from the file.
- **fx graphs** (models ``torch.fx`` traces): nodes with their op, target and arguments.  Function
  and method targets must be on explicit allowlists of pure tensor operations; ``getattr`` reads
  only a few tensor attributes named by a literal; ``get_attr`` nodes name tensors and
  ``call_module`` nodes modules of the model; arguments are data (no functions); node, input and
  keyword names must be identifiers, because fx generates Python source from them.  So no node
  can reach a function, a module object or Python globals.
- **values** (arguments, attributes, metadata): JSON with ``{"__t": ...}`` tags for tuples, dicts,
  slices, dtypes, devices and tensors (which go to the tensor store).

What may be named (functions, classes, identifiers) is decided in :mod:`.safe_names`; every
violation is a :class:`UnsafeArtifact` (a ``ValueError``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from aup.compression.torch.artifact.allowlist import (FX_OPS, HF_ATTENTION, MODULE_INTERNALS, TENSOR_METHODS, UnsafeArtifact, check_getattr,
                         check_identifier, class_path, function_name, hf_config_base, resolve_class,
                         resolve_function)

__all__ = ["UnsafeArtifact", "Encoder", "Decoder"]


# ----------------------------------------------------------------------------- encoding


class Encoder:
    """Turns modules, fx graphs and values into JSON, collecting tensors into ``tensors``."""

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self._tensor_keys: dict[int, tuple[Any, str]] = {}
        self._configs: dict[int, int] = {}
        self.configs: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- tensors
    def tensor(self, t: torch.Tensor, key: str) -> str:
        """Store ``t`` under ``key`` once per tensor object (tied weights share one); returns the key used."""
        known = self._tensor_keys.get(id(t))
        if known is not None:
            return known[1]
        self._tensor_keys[id(t)] = (t, key)  # keeps ``t`` alive so its id is not reused
        self.tensors[key] = t.detach()
        return key

    # ---------------------------------------------------------------- values
    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__t": "float", "v": repr(v)}
        if isinstance(v, torch.fx.Node):
            return {"__t": "node", "v": v.name}
        if isinstance(v, torch.Size):
            return {"__t": "size", "v": list(v)}
        if isinstance(v, tuple):
            return {"__t": "tuple", "v": [self.value(x, f"{where}.{i}") for i, x in enumerate(v)]}
        if isinstance(v, list):
            return [self.value(x, f"{where}.{i}") for i, x in enumerate(v)]
        if isinstance(v, (set, frozenset)):
            return {"__t": "set", "v": [self.value(x, where) for x in sorted(v, key=repr)]}
        if isinstance(v, dict):
            return {"__t": "dict", "v": [[self.value(k, where), self.value(x, f"{where}.{k}")] for k, x in v.items()]}
        if isinstance(v, slice):
            return {"__t": "slice", "v": [self.value(v.start, where), self.value(v.stop, where),
                                          self.value(v.step, where)]}
        if v is Ellipsis:
            return {"__t": "ellipsis"}
        if isinstance(v, torch.dtype):
            return {"__t": "dtype", "v": str(v).replace("torch.", "")}
        if isinstance(v, torch.device):
            return {"__t": "device", "v": str(v)}
        if isinstance(v, (torch.memory_format, torch.layout)):
            return {"__t": "torchattr", "v": str(v).replace("torch.", "")}
        if isinstance(v, torch.Tensor):
            return {"__t": "tensor", "v": self.tensor(v, f"@{where}")}
        config_base = hf_config_base()
        if config_base is not None and isinstance(v, config_base):
            return {"__t": "hf_config", "v": self._config(v, config_base)}
        if callable(v) and not isinstance(v, (nn.Module, type)):
            try:
                return {"__t": "fn", "v": function_name(v, as_value=True)}
            except (UnsafeArtifact, RuntimeError, AttributeError):
                pass
        raise UnsafeArtifact(f"{where}: a {type(v).__name__} cannot be stored without pickle")

    def _config(self, config: Any, base: tuple[type, ...]) -> int:
        index = self._configs.get(id(config))
        if index is None:
            index = len(self.configs)
            self._configs[id(config)] = index
            self.configs.append({"cls": class_path(type(config)),
                                 "data": self.value(config.to_dict(), "config"),
                                 "attn": getattr(config, "_attn_implementation", None)})
        return index

    # ---------------------------------------------------------------- modules
    def module(self, m: nn.Module, path: str = "", skip_attrs: set[str] | None = None) -> dict[str, Any]:
        """One module and its children (parameters and buffers by tensor key)."""
        prefix = f"{path}." if path else ""
        attrs = {}
        for key, val in m.__dict__.items():
            if key in MODULE_INTERNALS or (skip_attrs and key in skip_attrs) or key.startswith(("aup_", "_aup")):
                continue
            attrs[key] = self.value(val, f"{prefix}{key}")
        params = {}
        for key, p in m._parameters.items():
            params[key] = None if p is None else {"t": self.tensor(p, prefix + key),
                                                  "grad": bool(p.requires_grad)}
        buffers = {}
        for key, b in m._buffers.items():
            buffers[key] = None if b is None else {"t": self.tensor(b, prefix + key),
                                                   "persistent": key not in m._non_persistent_buffers_set}
        children = {key: (None if c is None else self.module(c, prefix + key)) for key, c in m._modules.items()}
        return {"cls": class_path(type(m)), "attrs": attrs, "params": params, "buffers": buffers,
                "children": children}

    # ---------------------------------------------------------------- fx graph
    def graph(self, graph: torch.fx.Graph, root: nn.Module) -> list[dict[str, Any]]:
        """The nodes of ``root``'s graph; :class:`UnsafeArtifact` for any the loader would refuse."""
        nodes = []
        for node in graph.nodes:
            target = node.target
            if node.op == "call_function":
                target = function_name(target)
            elif node.op in ("get_attr", "call_module"):
                _check_target(root, node.op, target)
            _check_node(node.name, node.op, node.target, node.args, node.kwargs)
            nodes.append({"op": node.op, "name": node.name, "target": target,
                          "args": self.value(node.args, f"graph.{node.name}"),
                          "kwargs": self.value(dict(node.kwargs), f"graph.{node.name}")})
        return nodes


# ----------------------------------------------------------------------------- decoding


class Decoder:
    """The inverse of :class:`Encoder`, refusing anything outside the allowlists."""

    def __init__(self, tensors: dict[str, torch.Tensor], configs: list[dict[str, Any]], *, trust: bool) -> None:
        self.tensors = tensors
        self.trust = trust
        self._config_specs = configs
        self._configs: dict[int, Any] = {}
        self._params: dict[str, nn.Parameter] = {}
        self.nodes: dict[str, torch.fx.Node] = {}

    def _tensor(self, key: Any) -> torch.Tensor:
        if not isinstance(key, str) or key not in self.tensors:
            raise UnsafeArtifact(f"tensor {key!r} is missing from the artifact")
        return self.tensors[key]

    def value(self, v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, dict) or "__t" not in v:
            raise UnsafeArtifact(f"malformed value {str(v)[:80]!r}")
        tag, data = v["__t"], v.get("v")
        if tag == "tuple":
            return tuple(self.value(x) for x in data)
        if tag == "dict":
            return {self.value(k): self.value(x) for k, x in data}
        if tag == "set":
            return {self.value(x) for x in data}
        if tag == "float":
            if data not in ("inf", "-inf", "nan"):
                raise UnsafeArtifact(f"malformed float {data!r}")
            return float(data)
        if tag == "size":
            return torch.Size([int(x) for x in data])
        if tag == "slice":
            return slice(*(self.value(x) for x in data))
        if tag == "ellipsis":
            return Ellipsis
        if tag in ("dtype", "torchattr"):
            obj = getattr(torch, check_identifier(data, "torch attribute"), None)
            if not isinstance(obj, (torch.dtype, torch.memory_format, torch.layout)):
                raise UnsafeArtifact(f"unknown torch attribute {data!r}")
            return obj
        if tag == "device":
            return torch.device(str(data))
        if tag == "tensor":
            return self._tensor(data)
        if tag == "fn":
            return resolve_function(data)
        if tag == "node":
            if data not in self.nodes:
                raise UnsafeArtifact(f"graph refers to unknown node {data!r}")
            return self.nodes[data]
        if tag == "hf_config":
            return self._config(data)
        raise UnsafeArtifact(f"unknown value tag {tag!r}")

    def _config(self, index: Any) -> Any:
        if not isinstance(index, int) or not 0 <= index < len(self._config_specs):
            raise UnsafeArtifact(f"unknown config reference {index!r}")
        if index not in self._configs:
            spec = self._config_specs[index]
            base = hf_config_base()
            if base is None:
                import transformers  # noqa: F401  (the artifact names a transformers config)
                base = hf_config_base()
            cls = resolve_class(spec["cls"], trust=self.trust, base=base)
            config = cls.from_dict(self.value(spec["data"]))
            attn = spec.get("attn")
            if attn is not None and attn not in HF_ATTENTION:
                raise UnsafeArtifact(f"attention implementation {attn!r} is not allowed "
                                     f"(one of {sorted(HF_ATTENTION)})")
            if isinstance(attn, str) and hasattr(config, "_attn_implementation"):
                config._attn_implementation = attn
            self._configs[index] = config
        return self._configs[index]

    def module(self, spec: dict[str, Any]) -> nn.Module:
        cls = resolve_class(spec["cls"], trust=self.trust)
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        for key, val in spec.get("attrs", {}).items():
            if not isinstance(key, str) or key in MODULE_INTERNALS or key.startswith("__"):
                raise UnsafeArtifact(f"attribute {key!r} may not be set from an artifact")
            object.__setattr__(m, key, self.value(val))
        for key, p in spec.get("params", {}).items():
            check_identifier(key, "parameter name")
            if p is None:
                m.register_parameter(key, None)
                continue
            param = self._params.get(p["t"])
            if param is None:  # first use of a (possibly tied) parameter
                param = nn.Parameter(self._tensor(p["t"]), requires_grad=bool(p.get("grad", True)))
                self._params[p["t"]] = param
            m.register_parameter(key, param)
        for key, b in spec.get("buffers", {}).items():
            check_identifier(key, "buffer name")
            if b is None:
                m.register_buffer(key, None)
            else:
                m.register_buffer(key, self._tensor(b["t"]), persistent=bool(b.get("persistent", True)))
        for key, child in spec.get("children", {}).items():
            if not isinstance(key, str) or not key or "." in key:
                raise UnsafeArtifact(f"child module name {key!r} is not allowed")
            m._modules[key] = None if child is None else self.module(child)
        return m

    def graph(self, nodes: list[dict[str, Any]], root: nn.Module) -> torch.fx.Graph:
        """The fx graph of ``root``, every node checked (see the module docstring)."""
        graph = torch.fx.Graph()
        for spec in nodes:
            op, target = spec.get("op"), spec.get("target")
            if op not in FX_OPS:
                raise UnsafeArtifact(f"graph op {op!r} is not allowed")
            name = check_identifier(spec.get("name"), "graph node name")
            if op == "placeholder":
                check_identifier(str(target).lstrip("*"), "graph input name")
            elif op in ("get_attr", "call_module"):
                _check_target(root, op, check_identifier(target, f"{op} target", allow_dots=True))
            elif op == "call_function":
                target = resolve_function(target, as_value=False)
            elif op == "output":
                target = "output"
            args, kwargs = self.value(spec.get("args")), self.value(spec.get("kwargs"))
            if not isinstance(args, tuple) or not isinstance(kwargs, dict):
                raise UnsafeArtifact(f"graph node {name}: malformed arguments")
            _check_node(name, op, target, args, kwargs)
            node = graph.create_node(op, target, args, kwargs, name=name)
            if node.name != name:
                raise UnsafeArtifact(f"graph node name {name!r} is duplicated")
            self.nodes[name] = node
        graph.lint()
        return graph


def _check_node(name: str, op: str, target: Any, args: tuple, kwargs: dict) -> None:
    """Keyword names are identifiers, arguments are data, methods and getattr allowlisted."""
    for key in kwargs:
        check_identifier(key, f"graph node {name}: keyword")
    _check_data(args, name)
    _check_data(kwargs, name)
    if op == "call_method" and (target not in TENSOR_METHODS or not args or not isinstance(args[0], torch.fx.Node)):
        raise UnsafeArtifact(f"graph node {name}: tensor method {target!r} is not allowed")
    if target is getattr:
        check_getattr(name, args, kwargs)


def _check_target(root: nn.Module, op: str, target: str) -> None:
    """get_attr names a tensor of the model, call_module one of its modules (never a function or a value)."""
    obj: Any = root
    for part in target.split("."):
        if isinstance(obj, nn.Module):
            obj = obj._parameters.get(part, obj._buffers.get(part, obj._modules.get(part, obj.__dict__.get(part))))
        else:
            obj = None
    ok = isinstance(obj, nn.Module) if op == "call_module" else isinstance(obj, torch.Tensor)
    if not ok:
        what = "a module" if op == "call_module" else "a tensor"
        raise UnsafeArtifact(f"graph {op} target {target!r} is not {what} of the model")


def _check_data(value: Any, node: str) -> None:
    """Graph arguments are data and node references: a function there could be called by its receiver."""
    if isinstance(value, (tuple, list, set, frozenset)):
        for item in value:
            _check_data(item, node)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_data(key, node)
            _check_data(item, node)
    elif callable(value) and not isinstance(value, torch.Tensor):
        raise UnsafeArtifact(f"graph node {node}: a function as an argument is not allowed")
