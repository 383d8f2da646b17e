"""Names of every compressor -> the class that implements it (torch-free).

The experiment validator resolves compressor names before any trial runs, so this module must not
import torch or tensorflow: classes are referenced as ``"module:Class"`` strings and imported only by
:func:`load_class`. Adding a compressor means adding one module and one line here.
"""
from __future__ import annotations

import importlib
from typing import Any

_PRUNERS = "aup.compression.torch.pruners"
_QUANT = "aup.compression.torch.quantization"

COMPRESSORS: dict[str, dict[str, dict[str, str]]] = {
    "torch": {
        "pruning": {
            "level": f"{_PRUNERS}.magnitude:LevelPruner",
            "slim": f"{_PRUNERS}.slim:SlimPruner",
            "fpgm": f"{_PRUNERS}.fpgm:FPGMPruner",
            "l1_filter": f"{_PRUNERS}.filter_norm:L1FilterPruner",
            "l2_filter": f"{_PRUNERS}.filter_norm:L2FilterPruner",
            "activation_apoz_rank_filter": f"{_PRUNERS}.activation:ActivationAPoZRankFilterPruner",
            "activation_mean_rank_filter": f"{_PRUNERS}.activation:ActivationMeanRankFilterPruner",
            "taylor_fo_weight_filter": f"{_PRUNERS}.taylor:TaylorFOWeightFilterPruner",
            "agp": f"{_PRUNERS}.agp:AGPPruner",
            "net_adapt": f"{_PRUNERS}.net_adapt:NetAdaptPruner",
            "simulated_annealing": f"{_PRUNERS}.simulated_annealing:SimulatedAnnealingPruner",
            "auto_compress": f"{_PRUNERS}.auto_compress:AutoCompressPruner",
            "amc": f"{_PRUNERS}.amc:AMCPruner",
            "admm": f"{_PRUNERS}.admm:ADMMPruner",
            "lottery_ticket": f"{_PRUNERS}.lottery_ticket:LotteryTicketPruner",
            "sensitivity": f"{_PRUNERS}.sensitivity:SensitivityPruner",
            "transformer": f"{_PRUNERS}.heads:TransformerPruner",
        },
        "quantization": {
            "naive": f"{_QUANT}.naive:NaiveQuantizer",
            "qat": f"{_QUANT}.qat:QATQuantizer",
            "dorefa": f"{_QUANT}.dorefa:DoReFaQuantizer",
            "bnn": f"{_QUANT}.bnn:BNNQuantizer",
        },
    },
    "tensorflow": {
        "pruning": {
            "level": "aup.compression.tensorflow.level:LevelPruner",
        },
    },
}

FRAMEWORK_ALIASES = {"pytorch": "torch", "tf": "tensorflow"}


def _listing(names: Any) -> str:
    return ", ".join(sorted(names))


def resolve(framework: str, compression_type: str, name: str) -> str:
    """Return the ``"module:Class"`` path of a compressor, or raise ValueError listing what exists."""
    framework = FRAMEWORK_ALIASES.get(framework, framework) if isinstance(framework, str) else framework
    if framework not in COMPRESSORS:
        raise ValueError(f"unknown compression framework {framework!r}; supported: {_listing(COMPRESSORS)}")
    types = COMPRESSORS[framework]
    if compression_type not in types:
        raise ValueError(
            f"unknown compression type {compression_type!r} for framework {framework!r}; "
            f"supported: {_listing(types)}"
        )
    names = types[compression_type]
    if name not in names:
        raise ValueError(
            f"unknown compressor {name!r} for {framework} {compression_type}; supported: {_listing(names)}"
        )
    return names[name]


def canonical_framework(framework: str) -> str:
    """``"pytorch"`` -> ``"torch"``; other values unchanged."""
    return FRAMEWORK_ALIASES.get(framework, framework)


def find(name: str) -> list[tuple[str, str]]:
    """All ``(framework, type)`` pairs that define a compressor called ``name``."""
    return [(fw, ty) for fw, types in COMPRESSORS.items() for ty, names in types.items() if name in names]


def load_class(framework: str, compression_type: str, name: str) -> type:
    """Import and return the compressor class; a missing module gives a clear ValueError."""
    target = resolve(framework, compression_type, name)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ValueError(
                f"compressor {name!r} ({framework} {compression_type}) is not implemented yet in this build "
                f"(module {module_name} is missing)"
            ) from exc
        raise ValueError(
            f"compressor {name!r} needs the package {exc.name!r}, which is not installed "
            f"(pip install it, e.g. the matching aup extra)"
        ) from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(
            f"compressor {name!r} ({framework} {compression_type}) is not implemented yet in this build "
            f"({module_name} has no {class_name})"
        ) from None
