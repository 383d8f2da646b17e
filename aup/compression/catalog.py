"""Every compressor aup knows, one entry each per framework (torch-free).

The experiment validator resolves compressor names and checks config_lists before any trial runs,
so this module imports neither torch nor tensorflow: a class is named by its ``"module:Class"`` path
and imported only by :func:`aup.compression.registry.load_class`. Everything else that used to keep
its own table reads an :class:`Entry` here:

- ``registry`` (names -> class path, the error listing the names),
- ``schemas`` (the entry's config_list :class:`~aup.compression.keyspec.Schema`),
- the quantizers' rules (``quant``: which quant types, default and only-allowed bit widths),
- the base-criterion tables of AGP, ADMM, the sensitivity pruner and the search pruners
  (``nni_alias``: NNI 2.0's short name such as ``"l1"``; ``scores``: what the criterion reads),
- the pipeline's "can this stage be shrunk before the quantizer" test and the searches' "does this
  base criterion remove whole filters" test (``structured``, via :func:`base_entry`),
- AGP's "update every layer at once" (``ranks_together``), the quantizers' "an empty config_list
  means every weighted layer" (``Quantization.empty_means_all``).

Code never compares a compressor's name to decide what kind it is: it asks its entry.

Adding a compressor is one class plus one :class:`Entry` below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from aup.compression.keyspec import (
    COMMON, EPOCH, EXCLUDE, POSITIVE_INT, QUANT_TYPES, SPARSITY, SPARSITY_CLOSED, SPARSITY_KEYS, SPARSITY_NM,
    UNIT_SPARSITY, KeySpec, Schema,
    quant_keys,
)

FRAMEWORK_ALIASES = {"pytorch": "torch", "tf": "tensorflow"}

_PRUNERS = "aup.compression.torch.pruners"
_QUANT = "aup.compression.torch.quantization"


@dataclass(frozen=True)
class Quantization:
    """What a quantizer implements: its quant types, the bit width used when an entry gives none,
    and the only width it can produce (``fixed_bits``; NNI 2.0's naive quantizer is int8 only,
    BNN is binary), which the schema enforces before a trial runs."""

    types: tuple[str, ...]
    default_bits: int | None = None
    fixed_bits: int | None = None
    # an empty config_list quantizes every weighted layer at ``default_bits`` (NNI's seed example
    # ``"compressor": "naive", "config_list": []``, which in NNI quantized nothing, which no user intends)
    empty_means_all: bool = False


@dataclass(frozen=True)
class Entry:
    """One compressor of one framework.

    ``structured``: it removes whole filters/channels, so ``apply_speedup`` can shrink the model
    physically (the pipeline shrinks such a stage before a quantizer attaches).
    ``nni_alias``: NNI 2.0's short name when the compressor doubles as a base criterion of
    schedules and searches (``pruning_algorithm`` of AGP, ``base_algo`` of ADMM and the search
    pruners, ``prune_type`` of the sensitivity analysis).
    ``scores``: what the criterion reads, ``"weights"``, ``"bn"`` (BatchNorm scales),
    ``"activations"`` or ``"gradients"``; a weight criterion needs no data, so searches that prune
    many copies use only those.
    ``exact_sparsity``: the achieved sparsity over the configured layers meets the configured target
    (within rounding to whole units); False where the algorithm defines its target otherwise
    (NNI's NetAdapt counts its steps against every Conv2d/Linear weight and the next layer's inputs
    and stops on nominal progress, so it prunes less of the configured layers).
    ``ranks_together``: the criterion ranks all its configured layers against each other (slim's
    BatchNorm scales), so a schedule over it must update every layer whenever one is due.
    ``model_family``: the models it applies to, ``"cnn"`` (convolutions, linear layers) or
    ``"transformer"`` (attention heads and MLP channels), so that tests and examples pick a model.
    ``implemented``: False while the class does not exist in this build; the name stays
    reserved and creating it says so in one line instead of a traceback.
    """

    framework: str
    compression_type: str
    name: str
    class_path: str
    schema: Schema
    structured: bool = False
    nni_alias: str | None = None
    scores: str | None = None
    quant: Quantization | None = None
    implemented: bool = True
    model_family: str = "cnn"
    exact_sparsity: bool = True
    ranks_together: bool = False

    @property
    def module(self) -> str:
        return self.class_path.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.class_path.partition(":")[2]


_FILTER = Schema(SPARSITY_KEYS, op_types=("Conv2d",))
_OVERALL = Schema(SPARSITY_KEYS)


def _pruner(name: str, path: str, schema: Schema, **facts: object) -> Entry:
    return Entry("torch", "pruning", name, f"{_PRUNERS}.{path}", schema, **facts)  # type: ignore[arg-type]


def _quantizer(name: str, path: str, quant: Quantization, schema: Schema) -> Entry:
    return Entry("torch", "quantization", name, f"{_QUANT}.{path}", schema, quant=quant)


def _filter(name: str, path: str, alias: str, scores: str) -> Entry:
    return _pruner(name, path, _FILTER, structured=True, nni_alias=alias, scores=scores)


# Keras names layers by class (Conv2D, Dense) and by layer name (conv2d, conv2d_1, dense)
_KERAS_SPARSITY_KEYS = {
    "sparsity": SPARSITY,
    "op_types": KeySpec("str_list", "a list of Keras layer class names, e.g. [\"Conv2D\", \"Dense\"] or [\"default\"]"),
    "op_names": KeySpec("str_list", "a list of Keras layer names, e.g. [\"conv2d\", \"dense\"]"),
    "exclude": EXCLUDE,
}

# One-shot LLM compressors (Wanda, SparseGPT, RTN, GPTQ): Linear layers (and transformers' Conv1D, GPT-2),
# sparsity as a fraction or an "n:m" pattern, weight-only k-bit grids in groups of input columns.
_ONE_SHOT = Schema({"sparsity": SPARSITY_NM, **COMMON}, op_types=("Linear", "Conv1D"))
_BOOL = KeySpec("bool", "true or false")
_WEIGHT_ONLY_KEYS = {
    "quant_types": KeySpec("quant_types", "a non-empty list of \"weight\"", choices=("weight",)),
    "quant_bits": KeySpec("quant_bits", "an integer in [2, 8] or a dict {\"weight\": integer in [2, 8]}", 2.0, 8.0,
                          choices=("weight",)),
    "group_size": KeySpec("int", "an integer >= 0 (input columns per scale; 0: one scale per output row)", 0.0),
    "symmetric": _BOOL,
    **COMMON,
}
_WEIGHT_ONLY = Quantization(("weight",), default_bits=4)

_NAIVE_WHY = "naive is symmetric int8"
_BNN_WHY = "bnn binarises to +-1"

ENTRIES: tuple[Entry, ...] = (
    # ---- torch pruning: criteria
    _pruner("level", "magnitude:LevelPruner", Schema(SPARSITY_KEYS), nni_alias="level", scores="weights"),
    _pruner("slim", "slim:SlimPruner",
            Schema(SPARSITY_KEYS, op_types=("BatchNorm2d",), same_value=("sparsity",)),
            structured=True, nni_alias="slim", scores="bn", ranks_together=True),
    _filter("l1_filter", "filter_norm:L1FilterPruner", "l1", "weights"),
    _filter("l2_filter", "filter_norm:L2FilterPruner", "l2", "weights"),
    _filter("fpgm", "fpgm:FPGMPruner", "fpgm", "weights"),
    _filter("taylor_fo_weight_filter", "taylor:TaylorFOWeightFilterPruner", "taylorfo", "gradients"),
    _filter("activation_apoz_rank_filter", "activation:ActivationAPoZRankFilterPruner", "apoz", "activations"),
    _filter("activation_mean_rank_filter", "activation:ActivationMeanRankFilterPruner", "mean_activation",
            "activations"),
    # ---- torch pruning: schedules and searches over a criterion
    _pruner("agp", "agp:AGPPruner", Schema(
        {"initial_sparsity": SPARSITY_CLOSED, "final_sparsity": SPARSITY_CLOSED, "start_epoch": EPOCH,
         "end_epoch": EPOCH, "frequency": POSITIVE_INT, **COMMON},
        required=("final_sparsity",),
        ordered_pairs=(("start_epoch", "end_epoch", "an integer"),
                       ("initial_sparsity", "final_sparsity", "a number")),
    )),
    _pruner("net_adapt", "net_adapt:NetAdaptPruner", _OVERALL, exact_sparsity=False),
    _pruner("simulated_annealing", "simulated_annealing:SimulatedAnnealingPruner", _OVERALL),
    _pruner("auto_compress", "auto_compress:AutoCompressPruner", _OVERALL),
    _pruner("amc", "amc:AMCPruner", Schema(dict(COMMON), required=())),
    _pruner("admm", "admm:ADMMPruner", _OVERALL),
    _pruner("lottery_ticket", "lottery_ticket:LotteryTicketPruner", Schema(
        {"sparsity": SPARSITY, "prune_iterations": POSITIVE_INT, **COMMON},
        required=("sparsity", "prune_iterations"), same_value=("prune_iterations",),
    )),
    _pruner("sensitivity", "sensitivity:SensitivityPruner", _OVERALL),
    # ---- torch pruning: transformer structure (whole attention heads, MLP hidden channels)
    _pruner("transformer", "transformer:TransformerPruner",
            Schema({"head_sparsity": UNIT_SPARSITY, "mlp_sparsity": UNIT_SPARSITY, **COMMON}, required=()),
            structured=True, model_family="transformer"),
    # ---- torch pruning: one-shot, calibrated, for language models
    _pruner("wanda", "wanda:WandaPruner", _ONE_SHOT, scores="activations"),
    _pruner("sparsegpt", "sparsegpt:SparseGPTPruner", _ONE_SHOT, scores="activations"),
    # ---- torch quantization
    _quantizer("naive", "naive:NaiveQuantizer", Quantization(("weight",), default_bits=8, fixed_bits=8, empty_means_all=True),
               Schema({**quant_keys(("weight",), 8, _NAIVE_WHY), **COMMON}, required=(), allow_empty=True)),
    _quantizer("qat", "qat:QATQuantizer", Quantization(QUANT_TYPES),
               Schema({**quant_keys(QUANT_TYPES), "quant_start_step": EPOCH, **COMMON},
                      required=("quant_types", "quant_bits"))),
    _quantizer("dorefa", "dorefa:DoReFaQuantizer", Quantization(("weight",)),
               Schema({**quant_keys(("weight",)), **COMMON}, required=("quant_types", "quant_bits"))),
    _quantizer("bnn", "bnn:BNNQuantizer", Quantization(("weight", "output"), default_bits=1, fixed_bits=1),
               Schema({**quant_keys(("weight", "output"), 1, _BNN_WHY), **COMMON},
                      required=("quant_types", "quant_bits"))),
    # ---- torch quantization: weight-only k-bit grids for language models
    _quantizer("rtn", "rtn:RTNQuantizer", _WEIGHT_ONLY,
               Schema(_WEIGHT_ONLY_KEYS, required=(), op_types=("Linear", "Conv1D"))),
    _quantizer("gptq", "gptq:GPTQQuantizer", _WEIGHT_ONLY,
               Schema({**_WEIGHT_ONLY_KEYS, "act_order": _BOOL}, required=(), op_types=("Linear", "Conv1D"))),
    # ---- tensorflow (Keras 3)
    Entry("tensorflow", "pruning", "level", "aup.compression.tensorflow.pruners:LevelPruner",
          Schema(_KERAS_SPARSITY_KEYS), nni_alias="level", scores="weights"),
)

_INDEX: dict[tuple[str, str, str], Entry] = {(e.framework, e.compression_type, e.name): e for e in ENTRIES}


class UnknownCompressor(ValueError):
    """A framework, type or compressor name the catalog does not have; the message lists what exists."""


def canonical_framework(framework: str) -> str:
    """``"pytorch"`` -> ``"torch"``, ``"tf"`` -> ``"tensorflow"``; other values unchanged."""
    return FRAMEWORK_ALIASES.get(framework, framework) if isinstance(framework, str) else framework


def frameworks() -> list[str]:
    return list(dict.fromkeys(e.framework for e in ENTRIES))


def types_of(framework: str) -> list[str]:
    return list(dict.fromkeys(e.compression_type for e in ENTRIES if e.framework == framework))


def names_of(framework: str, compression_type: str) -> list[str]:
    return [e.name for e in ENTRIES if e.framework == framework and e.compression_type == compression_type]


def _listing(names: list[str]) -> str:
    return ", ".join(sorted(names))


def lookup(framework: str, compression_type: str, name: str) -> Entry:
    """The entry of a compressor, or :class:`UnknownCompressor` listing what exists at the first wrong level."""
    framework = canonical_framework(framework)
    if framework not in frameworks():
        raise UnknownCompressor(f"unknown compression framework {framework!r}; supported: {_listing(frameworks())}")
    types = types_of(framework)
    if compression_type not in types:
        raise UnknownCompressor(f"unknown compression type {compression_type!r} for framework {framework!r}; "
                                f"supported: {_listing(types)}")
    entry = _INDEX.get((framework, compression_type, name))
    if entry is None:
        raise UnknownCompressor(f"unknown compressor {name!r} for {framework} {compression_type}; "
                                f"supported: {_listing(names_of(framework, compression_type))}")
    return entry


def find(name: str) -> list[Entry]:
    """Every entry called ``name`` (one per framework and type that defines it)."""
    return [e for e in ENTRIES if e.name == name]


def entries(framework: str | None = None, compression_type: str | None = None) -> Iterator[Entry]:
    """Entries, optionally of one framework and/or type, in catalog order."""
    for entry in ENTRIES:
        if framework is not None and entry.framework != canonical_framework(framework):
            continue
        if compression_type is not None and entry.compression_type != compression_type:
            continue
        yield entry


def base_algos(framework: str = "torch", scores: tuple[str, ...] | None = None) -> dict[str, str]:
    """NNI 2.0 short base-algorithm names -> compressor names (``{"l1": "l1_filter", ...}``).

    ``scores`` keeps only criteria reading those inputs (``("weights",)``: the data-free criteria
    that the sensitivity analysis, ADMM and the search pruners can run on many copies).
    """
    return {e.nni_alias: e.name for e in entries(framework, "pruning")
            if e.nni_alias is not None and (scores is None or e.scores in scores)}


def quantization(name: str, framework: str = "torch") -> Quantization:
    """The quant facts of a quantizer (unknown names raise UnknownCompressor, listing the known ones)."""
    quant = lookup(framework, "quantization", name).quant
    if quant is None:
        raise RuntimeError(f"catalog entry {name!r} is a quantizer without quant facts (add Quantization(...))")
    return quant


def is_structured(framework: str, compression_type: str, name: str) -> bool:
    """Whether the compressor removes whole filters/channels (physically shrinkable)."""
    entry = _INDEX.get((canonical_framework(framework), compression_type, name))
    return bool(entry and entry.structured)


def get(framework: str, compression_type: str, name: str) -> Entry | None:
    """The entry, or None for a name the catalog does not have (callers that must refuse use lookup)."""
    return _INDEX.get((canonical_framework(framework), compression_type, name))


def base_entry(name: str, framework: str = "torch") -> Entry:
    """The pruning entry of a base criterion given by NNI's short name (``"l1"``) or aup's
    (``"l1_filter"``), for schedules and searches that ask what their criterion is."""
    return lookup(framework, "pruning", base_algos(framework).get(name, name))


def find_types(name: str) -> list[tuple[str, str]]:
    """``(framework, type)`` of every entry called ``name``."""
    return [(e.framework, e.compression_type) for e in find(name)]
