"""The ``distill`` options of a ``compression`` section: validated before any trial (torch-free).

What a user writes (every number may be a search range, like any key of the section)::

    "distill": {"alpha": {"type": "float", "range": [0.0, 0.9]},   # weight of the teacher's logits
                "temperature": 4,                                  # softmax temperature T > 0
                "layers": ["features.3"],                          # optional: MSE on these modules' outputs
                "layer_weight": 1.0}                               # optional: weight of that MSE

``alpha = 0`` is "no distillation" (the label loss only), so a range or a choice that includes 0 lets
the search decide whether to distill at all. The runner writes the concrete values to the job
config as ``compression_distill``; the trial's compressor reads them (see
``aup.compression.torch.distill``). ``layers`` is fixed (not searched): a list of module names, or
``{student module: teacher module}`` when the names differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from aup.errors import did_you_mean
from aup.numbers import is_finite_number

__all__ = ["DISTILL_KEYS", "SEARCHABLE", "DistillOptions", "value_problem", "layers_problem", "parse_distill"]

DISTILL_KEYS = ("alpha", "temperature", "layers", "layer_weight")
SEARCHABLE = ("alpha", "temperature", "layer_weight")
DEFAULTS = {"alpha": 0.5, "temperature": 4.0, "layer_weight": 1.0}


@dataclass(frozen=True)
class DistillOptions:
    """Concrete distillation options of one trial."""

    alpha: float = DEFAULTS["alpha"]
    temperature: float = DEFAULTS["temperature"]
    layers: Mapping[str, str] = field(default_factory=dict)  # student module -> teacher module
    layer_weight: float = DEFAULTS["layer_weight"]

    @property
    def active(self) -> bool:
        """Whether the teacher is consulted at all (alpha > 0 or intermediate layers)."""
        return self.alpha > 0 or (bool(self.layers) and self.layer_weight > 0)


def value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not a legal concrete value of the searchable ``key`` (None when it is)."""
    if not is_finite_number(value):
        return f"expected a number, got {value!r}"
    if key == "alpha" and not 0.0 <= value <= 1.0:
        return f"expected a weight between 0 and 1 (0: labels only, 1: teacher only), got {value!r}"
    if key == "temperature" and value <= 0:
        return f"expected a temperature > 0 (softmax(logits / T)), got {value!r}"
    if key == "layer_weight" and value < 0:
        return f"expected a weight >= 0, got {value!r}"
    return None


def layers_problem(value: Any) -> str | None:
    """Why ``layers`` is not a list of module names or a {student: teacher} mapping of names."""
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return None
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) and k and v
                                       for k, v in value.items()):
        return None
    return f"expected a list of module names or {{student module: teacher module}}, got {value!r}"


def unknown_key_problem(section: Mapping[str, Any], where: str) -> str | None:
    """One line for the first unknown key of a ``distill`` object."""
    for key in section:
        if key not in DISTILL_KEYS:
            extra = did_you_mean(str(key), DISTILL_KEYS, fallback=f" (known: {', '.join(DISTILL_KEYS)})")
            return f"{where}.{key}: unknown key{extra}"
    return None


def parse_distill(value: Any, where: str = "compression_distill") -> DistillOptions | None:
    """Concrete options from a job config's ``compression_distill`` (None, false: no distillation).

    Raises ValueError with one line naming the key; ``true`` means the defaults.
    """
    if value is None or value is False:
        return None
    if value is True:
        return DistillOptions()
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object such as {{\"alpha\": 0.5, \"temperature\": 4}}, got {value!r}")
    problem = unknown_key_problem(value, where)
    if problem:
        raise ValueError(problem)
    numbers = {}
    for key in SEARCHABLE:
        raw = value.get(key, DEFAULTS[key])
        problem = value_problem(key, raw)
        if problem:
            raise ValueError(f"{where}.{key}: {problem}")
        numbers[key] = float(raw)
    layers = value.get("layers", [])
    problem = layers_problem(layers)
    if problem:
        raise ValueError(f"{where}.layers: {problem}")
    pairs = dict(layers) if isinstance(layers, dict) else {name: name for name in layers}
    return DistillOptions(layers=pairs, **numbers)
