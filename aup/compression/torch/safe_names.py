"""What a safe artifact may name: the allowlists of functions, classes and identifiers.

Why apart from the codec: these rules are the security boundary of ``load_compressed`` (a file
must not be able to reach arbitrary code), so they are kept in one short module that can be read
and reviewed on its own.  Function targets must be tensor operations (``torch`` ATen ops,
``torch.nn.functional``, ``operator`` arithmetic, ``math``, a few builtins); classes resolve only
from modules already imported or under ``torch``, ``transformers`` and ``aup`` (``trust=True``
lets the loader import others); names must be identifiers.  Every violation is an
:class:`UnsafeArtifact` (a ``ValueError``).
"""
from __future__ import annotations

import builtins
import importlib
import keyword
import math
import operator
import sys
import types
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["UnsafeArtifact", "function_name", "resolve_function", "resolve_class", "class_path", "check_identifier",
           "hf_config_base", "MODULE_INTERNALS", "TENSOR_METHODS_DENIED", "FX_OPS"]

MODULE_INTERNALS = {
    "training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules", "_backward_pre_hooks",
    "_backward_hooks", "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
    "forward",  # an instance-level forward is an attached compressor (quantizer override), not architecture
    "_compiled_call_impl",
}
_SAFE_CLASS_ROOTS = ("torch", "transformers", "aup")
_OPERATOR_OK = {
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert", "getitem",
    "setitem", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "lshift", "rshift", "iadd",
    "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "contains", "is_", "is_not", "index",
}
_BUILTINS_OK = {"getattr", "len", "int", "float", "bool", "min", "max", "abs", "round", "range", "tuple", "list",
                "sum", "divmod"}
TENSOR_METHODS_DENIED = {"apply_", "map_", "map2_", "register_hook", "register_post_accumulate_grad_hook",
                         "backward", "share_memory_", "storage", "untyped_storage", "numpy", "tolist",
                         "pin_memory", "record_stream", "set_", "data_ptr", "untyped_storage"}
FX_OPS = {"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"}


class UnsafeArtifact(ValueError):
    """The file describes something outside what a safe artifact may contain."""


# ----------------------------------------------------------------------------- functions


def function_name(fn: Any) -> str:
    """Qualified name of an allowed function (``torch.relu``, ``_operator.add``, ``getattr``)."""
    from torch.fx.node import _get_qualified_name

    name = _get_qualified_name(fn)
    if resolve_function(name) is not fn:
        raise UnsafeArtifact(f"function {name} is not on the artifact's allowlist of tensor operations")
    return name


def resolve_function(name: str) -> Callable[..., Any]:
    """The allowed function called ``name``; :class:`UnsafeArtifact` for anything else."""
    if not isinstance(name, str):
        raise UnsafeArtifact(f"function name must be a string, got {type(name).__name__}")
    module_name, _, attr = name.rpartition(".")
    if attr.startswith("_") or not attr.isidentifier():
        raise UnsafeArtifact(f"function {name!r} is not on the allowlist")
    fn: Any = None
    if module_name == "":
        fn = getattr(builtins, attr, None) if attr in _BUILTINS_OK else None
    elif module_name in ("operator", "_operator"):
        fn = getattr(operator, attr, None) if attr in _OPERATOR_OK else None
    elif module_name == "math":
        fn = getattr(math, attr, None)
    elif module_name == "torch":
        fn = getattr(torch._C._VariableFunctions, attr, None)
        if fn is None or getattr(torch, attr, None) is not fn:
            fn = getattr(torch.functional, attr, None) if attr in torch.functional.__all__ else None
    elif module_name == "torch.functional":
        fn = getattr(torch.functional, attr, None) if attr in torch.functional.__all__ else None
    elif module_name == "torch._C._nn":
        fn = getattr(torch._C._nn, attr, None)
    elif module_name == "torch.nn.functional":
        fn = getattr(torch.nn.functional, attr, None)
        if isinstance(fn, (type, types.ModuleType)):
            fn = None
    if fn is None or not callable(fn) or isinstance(fn, type):
        raise UnsafeArtifact(f"function {name!r} is not on the artifact's allowlist of tensor operations")
    return fn


def check_identifier(name: Any, what: str, allow_dots: bool = False) -> str:
    parts = name.split(".") if isinstance(name, str) and allow_dots else [name]
    for part in parts:
        ok = isinstance(part, str) and (part.isidentifier() or (allow_dots and part.isdigit()))
        if not ok or keyword.iskeyword(part):
            raise UnsafeArtifact(f"{what} {name!r} is not a valid identifier")
    return name


def resolve_class(path: str, *, trust: bool, base: type | tuple[type, ...] = nn.Module) -> type:
    """Class ``module:qualname``, a subclass of ``base``; imports only safe or already-imported modules."""
    if not isinstance(path, str) or ":" not in path:
        raise UnsafeArtifact(f"class reference {path!r} is malformed")
    module_name, qualname = path.split(":", 1)
    for part in module_name.split(".") + qualname.split("."):
        check_identifier(part, "class reference part")
    module = sys.modules.get(module_name)
    if module is None:
        if not (trust or module_name.split(".")[0] in _SAFE_CLASS_ROOTS):
            raise UnsafeArtifact(f"class {qualname} lives in module {module_name!r}, which is not imported; "
                                 f"import it before loading (or pass trust=True for a file you trust)")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnsafeArtifact(f"class {qualname}: cannot import {module_name!r} ({exc})") from None
    obj: Any = module
    for part in qualname.split("."):
        if part.startswith("__"):
            raise UnsafeArtifact(f"class reference {path!r} is malformed")
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        names = "/".join(b.__name__ for b in (base if isinstance(base, tuple) else (base,)))
        raise UnsafeArtifact(f"{path} is not a {names} class")
    return obj


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def hf_config_base() -> tuple[type, ...] | None:
    """Hugging Face's config classes (model and generation configs), if transformers is loaded."""
    if "transformers" not in sys.modules:
        return None
    try:
        from transformers import GenerationConfig, PretrainedConfig
    except ImportError:  # pragma: no cover - broken transformers install
        return None
    return (PretrainedConfig, GenerationConfig)

