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
           "hf_config_base", "check_getattr", "MODULE_INTERNALS", "TENSOR_METHODS", "FX_OPS", "HF_ATTENTION"]

MODULE_INTERNALS = {
    "training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules", "_backward_pre_hooks",
    "_backward_hooks", "_is_full_backward_hook", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
    "forward",  # an instance-level forward is an attached compressor (quantizer override), not architecture
    "_compiled_call_impl",
}
_SAFE_CLASS_ROOTS = ("torch", "transformers", "aup")

# Explicit allowlists, name by name: every entry is a pure tensor operation (its result depends only on
# its arguments, it calls no callable it is given, touches no file, imports nothing).  Namespaces are
# never allowed wholesale: torch.nn.functional alone holds handle_torch_function, which calls its first
# argument, and torch holds from_file, which maps any file.
_TORCH_OPS = frozenset("""
    abs absolute acos acosh adaptive_avg_pool1d adaptive_max_pool1d add addbmm addcdiv addcmul addmm addmv addr
    all allclose amax amin aminmax angle any arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax
    argmin argsort argwhere as_strided asin asinh atan atan2 atanh atleast_1d atleast_2d atleast_3d avg_pool1d
    baddbmm batch_norm bernoulli bilinear binary_cross_entropy_with_logits bitwise_and bitwise_left_shift
    bitwise_not bitwise_or bitwise_right_shift bitwise_xor block_diag bmm broadcast_shapes broadcast_tensors
    broadcast_to bucketize cartesian_prod cat cdist ceil celu channel_shuffle chunk clamp clamp_max clamp_min clip
    clone column_stack complex concat concatenate conj constant_pad_nd conv1d conv2d conv3d conv_tbc
    conv_transpose1d conv_transpose2d conv_transpose3d copysign cos cosh cosine_similarity count_nonzero cross
    cummax cummin cumprod cumsum deg2rad detach diag diag_embed diagflat diagonal diff digamma dist div divide dot
    dropout dsplit dstack einsum embedding empty empty_like eq equal erf erfc erfinv exp exp2 expm1 eye
    feature_dropout fix flatten flip fliplr flipud float_power floor floor_divide fmax fmin fmod frac full
    full_like gather gcd ge gelu ger greater greater_equal group_norm gt hardshrink heaviside hsplit hstack hypot
    i0 imag index_add index_copy index_fill index_put index_reduce index_select inner instance_norm is_complex
    is_floating_point is_nonzero is_tensor isclose isfinite isin isinf isnan isneginf isposinf isreal kron
    kthvalue layer_norm lcm ldexp le lerp less less_equal lgamma linspace log log10 log1p log2 log_softmax
    logaddexp logaddexp2 logcumsumexp logical_and logical_not logical_or logical_xor logit logspace logsumexp lt
    masked_fill masked_scatter masked_select matmul max max_pool1d max_pool2d max_pool3d maximum mean median
    meshgrid min minimum mm mode movedim moveaxis msort mul multiply mv mvlgamma nan_to_num nanmean nanmedian
    nanquantile nansum narrow native_layer_norm ne neg negative nextafter nonzero norm normal not_equal numel
    ones ones_like outer pairwise_distance pdist permute pixel_shuffle pixel_unshuffle polar pow prelu prod
    quantile rad2deg rand rand_like randint randint_like randn randn_like randperm ravel real reciprocal relu
    remainder repeat_interleave reshape rms_norm roll rot90 round rrelu rsqrt rsub scalar_tensor scatter
    scatter_add scatter_reduce searchsorted select select_scatter selu sgn sigmoid sign signbit sin sinc sinh
    slice_scatter softmax sort split split_with_sizes sqrt square squeeze stack std std_mean sub subtract sum
    swapaxes swapdims t take take_along_dim tan tanh tensor tensor_split tensordot threshold tile topk trace
    transpose trapezoid trapz tril tril_indices triu triu_indices true_divide trunc unbind unflatten unique
    unique_consecutive unravel_index unsqueeze vander var var_mean vdot view_as_complex view_as_real vsplit
    vstack where xlogy zeros zeros_like
""".split())
_NN_FUNCTIONAL_OPS = frozenset("""
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
    adaptive_max_pool3d affine_grid alpha_dropout avg_pool1d avg_pool2d avg_pool3d batch_norm bilinear
    binary_cross_entropy binary_cross_entropy_with_logits celu channel_shuffle conv1d conv2d conv3d
    conv_transpose1d conv_transpose2d conv_transpose3d cosine_embedding_loss cosine_similarity cross_entropy
    dropout dropout1d dropout2d dropout3d elu embedding embedding_bag feature_alpha_dropout fold gelu glu
    grid_sample group_norm gumbel_softmax hardshrink hardsigmoid hardswish hardtanh huber_loss instance_norm
    interpolate kl_div l1_loss layer_norm leaky_relu linear local_response_norm log_sigmoid log_softmax
    logsigmoid lp_pool1d lp_pool2d margin_ranking_loss max_pool1d max_pool1d_with_indices max_pool2d
    max_pool2d_with_indices max_pool3d max_unpool1d max_unpool2d max_unpool3d mish mse_loss nll_loss normalize
    one_hot pad pairwise_distance pdist pixel_shuffle pixel_unshuffle prelu relu relu6 rms_norm rrelu
    scaled_dot_product_attention selu sigmoid silu smooth_l1_loss soft_margin_loss softmax softmin softplus
    softshrink softsign tanh tanhshrink threshold triplet_margin_loss unfold upsample upsample_bilinear
    upsample_nearest
""".split())
_MATH_OPS = frozenset("""
    acos acosh asin asinh atan atan2 atanh ceil comb copysign cos cosh degrees dist erf erfc exp expm1 fabs
    factorial floor fmod frexp fsum gamma gcd hypot isclose isfinite isinf isnan isqrt lcm ldexp lgamma log
    log10 log1p log2 modf perm pow prod radians remainder sin sinh sqrt tan tanh trunc
""".split())
# tensor methods that are not also functions of torch (x.view(...), x.size(), ...); the in-place form
# (trailing underscore) of an allowed operation is allowed too.
_TENSOR_ONLY_METHODS = frozenset("""
    bfloat16 bool byte char contiguous cpu dim double element_size expand expand_as fill_ float half int
    is_contiguous item long masked_fill_ ndimension nelement new_empty new_full new_ones new_tensor new_zeros
    numel repeat reshape_as short size stride to type_as unfold view view_as zero_
""".split())
# inputs whose in-place form (name + "_") is missing or not a pure tensor operation
_NO_INPLACE = frozenset({"tensor", "normal", "empty", "arange", "rand", "randn"})
# attributes the graph may read with getattr (fx records ``x.shape`` that way); nothing else is reachable
_GETATTR_OK = frozenset({"shape", "dtype", "device", "ndim", "T", "mT", "H", "mH", "real", "imag", "is_cuda",
                         "is_sparse", "is_quantized", "requires_grad", "layout", "data", "grad",
                         "values", "indices"})  # the last two: fields of torch.max/min/sort/topk results
_OPERATOR_OK = frozenset({
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "abs", "invert", "getitem",
    "setitem", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "lshift", "rshift", "iadd",
    "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "contains", "is_", "is_not", "index",
})
# builtins: getattr (checked per node, see ``check_getattr``) and conversions; none takes a callable
# (min/max/sum/sorted do, through ``key``/iterables, so they are not here)
_BUILTINS_OK = frozenset({"getattr", "len", "int", "float", "bool", "abs", "round", "tuple", "list", "divmod"})
# allowed as call targets but never as values (attributes, arguments): a value is data, and getattr as data
# could be called by code that accepts callables
_NOT_A_VALUE = frozenset({"getattr"})
FX_OPS = {"placeholder", "get_attr", "call_function", "call_method", "call_module", "output"}
HF_ATTENTION = frozenset({"eager", "sdpa"})  # no hub kernel names: those download and run code


def _tensor_methods() -> frozenset[str]:
    ops = _TORCH_OPS | _TENSOR_ONLY_METHODS
    inplace = {f"{name}_" for name in _TORCH_OPS - _NO_INPLACE}
    return frozenset(name for name in ops | inplace if callable(getattr(torch.Tensor, name, None)))


TENSOR_METHODS = _tensor_methods()


class UnsafeArtifact(ValueError):
    """The file describes something outside what a safe artifact may contain."""


# ----------------------------------------------------------------------------- functions


def function_name(fn: Any, *, as_value: bool = False) -> str:
    """Qualified name of an allowed function (``torch.relu``, ``_operator.add``, ``getattr``)."""
    from torch.fx.node import _get_qualified_name

    name = _get_qualified_name(fn)
    if resolve_function(name, as_value=as_value) is not fn:
        raise UnsafeArtifact(f"function {name} is not on the artifact's allowlist of tensor operations")
    return name


def resolve_function(name: str, *, as_value: bool = True) -> Callable[..., Any]:
    """The allowed function called ``name``; :class:`UnsafeArtifact` for anything else.

    ``as_value``: the function is stored as data (a module attribute), not called by a graph node;
    ``getattr`` is then refused too.
    """
    if not isinstance(name, str):
        raise UnsafeArtifact(f"function name must be a string, got {type(name).__name__}")
    module_name, _, attr = name.rpartition(".")
    allowed = {"": _BUILTINS_OK, "operator": _OPERATOR_OK, "_operator": _OPERATOR_OK, "math": _MATH_OPS,
               "torch": _TORCH_OPS, "torch.functional": _TORCH_OPS, "torch.nn.functional": _NN_FUNCTIONAL_OPS,
               "torch._C._nn": _NN_FUNCTIONAL_OPS, "torch._C._VariableFunctions": _TORCH_OPS}.get(module_name)
    if allowed is None or attr not in allowed or (as_value and attr in _NOT_A_VALUE):
        raise UnsafeArtifact(f"function {name!r} is not on the artifact's allowlist of tensor operations")
    namespace = {"": builtins, "operator": operator, "_operator": operator, "math": math, "torch": torch,
                 "torch.functional": torch.functional, "torch.nn.functional": torch.nn.functional,
                 "torch._C._nn": torch._C._nn, "torch._C._VariableFunctions": torch._C._VariableFunctions
                 }[module_name]
    fn = getattr(namespace, attr, None)
    if fn is None or not callable(fn) or isinstance(fn, (type, types.ModuleType)):
        raise UnsafeArtifact(f"function {name!r} is not on the artifact's allowlist of tensor operations")
    return fn


def check_getattr(node_name: str, args: tuple, kwargs: dict) -> None:
    """A graph's ``getattr`` reads one allowlisted attribute named by a literal string (never computed)."""
    if kwargs or len(args) not in (2, 3) or not isinstance(args[1], str) or args[1] not in _GETATTR_OK:
        shown = args[1] if len(args) > 1 and isinstance(args[1], str) else "a computed name"
        raise UnsafeArtifact(f"graph node {node_name}: getattr of {shown!r} is not allowed")


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
        if any(part.startswith("_") for part in module_name.split(".")):
            # private modules and __main__ files run code when imported (torch.utils.model_dump.__main__
            # calls sys.exit(main(sys.argv))); a model's class lives in a public module
            raise UnsafeArtifact(f"class {qualname} lives in module {module_name!r}, which is private and "
                                 f"not imported; import it before loading")
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

