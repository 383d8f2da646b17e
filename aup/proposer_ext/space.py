"""The search space: Auptimizer's ``parameter_config`` as optuna distributions, plus the grid.

A :class:`SearchSpace` is an ordered list of :class:`Dimension`. Sampling is define-by-run
(``trial.suggest_*``), so *conditional* dimensions (sampled only when a parent choice has a given
value, e.g. a pruner-specific key under ``compressor``) work with every optuna sampler; a plain
``GridSampler`` could not express them, which is why :meth:`SearchSpace.grid` enumerates the grid
itself and the ``sequence`` proposer enqueues its points.

Grid semantics follow Auptimizer's ``sequence`` proposer (reference spec section 4): the first
parameter varies fastest; an int with ``n`` uses the floor of ``(max-min)/(n-1)`` as its step (so
``n`` is a request, not a promise: int [0,10] with n=5 gives step 2 and 6 points); a float's max is
padded by 0.1*interval so that rounding does not drop the end point; the default step is 1.
Where Auptimizer was inconsistent we do the right thing: its float point count used the unpadded
formula (``[0, 0.6]`` step 0.2 gave 3 counted but 4 generated values); here count and values
agree, values are ``min + k*step`` (no accumulated ``0.6000000000000001``), and an int step never
becomes 0 when ``n - 1 > max - min``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from aup.errors import did_you_mean
from aup.proposer_ext.common import ProposerError
from aup.numbers import is_finite_number

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna

KINDS = ("float", "int", "choice")
# Keys the runner writes into every job config: a hyperparameter may not shadow them.
RESERVED_NAMES = frozenset({"tid", "n_iterations", "save_model", "folder_name", "job_id"})
# A grid larger than this cannot be run point by point; Auptimizer would have started anyway.
MAX_GRID_POINTS = 1_000_000
_ENTRY_KEYS = ("name", "type", "range", "interval", "n", "log", "condition")
_CHOICE_TYPES = (type(None), bool, int, float, str)


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    ``condition=(parent, value)`` makes the dimension *conditional*: it is sampled (and appears in
    the job config) only when the dimension ``parent`` is active and has ``value``; a list/tuple
    ``value`` means "any of these" (a key shared by several compressors).
    """

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] | None = None
    log: bool = False
    interval: float | int | None = None
    n: int | None = None
    condition: tuple[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.choices is not None and not isinstance(self.choices, tuple):
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.condition is not None:
            condition = tuple(self.condition)
            if len(condition) == 2 and isinstance(condition[1], (list, set, frozenset)):
                condition = (condition[0], tuple(condition[1]))
            object.__setattr__(self, "condition", condition)
        problem = _check_dimension(self)
        if problem:
            raise ProposerError(f"{self.name}: {problem}")

    def active(self, params: dict[str, Any]) -> bool:
        """Whether this dimension is sampled given the values already chosen for earlier ones."""
        if self.condition is None:
            return True
        parent, wanted = self.condition
        if parent not in params:
            return False
        if isinstance(wanted, (list, tuple, set, frozenset)):
            return params[parent] in wanted
        return params[parent] == wanted

    def suggest(self, trial: "optuna.trial.BaseTrial") -> Any:
        """Ask the trial for this dimension's value (define-by-run)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices or ()))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The optuna distribution matching :meth:`suggest`."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution(list(self.choices or ()))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def grid_values(self) -> list[Any]:
        """This dimension's grid points (Auptimizer ``sequence`` rules, see the module docstring)."""
        if self.kind == "choice":
            return list(self.choices or ())
        low, high = self.low, self.high
        if self.kind == "int":
            return _int_grid(int(low), int(high), self.interval, self.n)
        return _float_grid(float(low), float(high), self.interval, self.n, self.log)


def _int_grid(low: int, high: int, interval: float | int | None, n: int | None) -> list[int]:
    if interval is not None:
        step = int(interval)
    elif n is not None:
        step = max(1, (high - low) // (n - 1))  # Auptimizer: floor((max-min)/(n-1))
    else:
        step = 1
    return list(range(low, high + 1, step))


def _float_grid(low: float, high: float, interval: float | int | None, n: int | None,
                log: bool) -> list[float]:
    if interval is None and n is not None:
        if log:  # geometric points: what "n values of a log-scaled range" means
            ratio = (high / low) ** (1.0 / (n - 1))
            return [min(high, _clean(low * ratio**k)) for k in range(n)]
        interval = (high - low) / (n - 1)
    step = float(interval if interval is not None else 1)
    count = math.floor((high - low + 0.1 * step) / step) + 1
    return [min(high, _clean(low + k * step)) for k in range(count)]


def _clean(value: float) -> float:
    """Drop binary noise such as 0.6000000000000001 so grid values look like what the user typed."""
    return float(f"{value:.12g}")


def _check_dimension(dim: Dimension) -> str | None:
    """One problem with a dimension, as ``key: message``, or None."""
    if not isinstance(dim.name, str) or not dim.name.strip():
        return "name: expected a non-empty string"
    if dim.kind not in KINDS:
        return f"type: expected one of float, int, choice, got {dim.kind!r}"
    if dim.condition is not None and (len(dim.condition) != 2 or not isinstance(dim.condition[0], str)):
        return f"condition: expected [parent name, value], got {list(dim.condition)!r}"
    if not isinstance(dim.log, bool):
        return f"log: expected true or false, got {dim.log!r}"
    if dim.kind == "choice":
        return _check_choices(dim)
    return _check_numeric(dim)


def _check_choices(dim: Dimension) -> str | None:
    if not dim.choices:
        return "range: a choice needs a non-empty list of values"
    for value in dim.choices:
        if not isinstance(value, _CHOICE_TYPES):
            return f"range: choice values must be strings, numbers, booleans or null, got {value!r}"
    if len({repr(v) for v in dim.choices}) != len(dim.choices):
        return f"range: the choice values {list(dim.choices)!r} contain duplicates"
    if dim.log:
        return "log: only float and int parameters can be log-scaled"
    if dim.interval is not None or dim.n is not None:
        return "interval/n: only float and int parameters take a grid step"
    return None


def _check_numeric(dim: Dimension) -> str | None:
    low, high = dim.low, dim.high
    if not (is_finite_number(low) and is_finite_number(high)):
        return f"range: expected [min, max] with two finite numbers, got {[low, high]!r}"
    if dim.kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        return f"range: expected two integers for an int parameter, got {[low, high]!r}"
    if low > high:
        return f"range: the range {[low, high]!r} is empty (expected min <= max)"
    if dim.log and low <= 0:
        return f"range: a log-scaled range needs min > 0, got {[low, high]!r}"
    if dim.interval is not None:
        if not is_finite_number(dim.interval) or dim.interval <= 0:
            return f"interval: expected a positive step, got {dim.interval!r}"
        if dim.kind == "int" and not float(dim.interval).is_integer():
            return f"interval: an int parameter needs an integer step, got {dim.interval!r}"
    if dim.n is not None and (isinstance(dim.n, bool) or not isinstance(dim.n, int) or dim.n < 2):
        return f"n: expected an integer >= 2 (number of grid points), got {dim.n!r}"
    return None


class SearchSpace:
    """An ordered set of dimensions; conditional ones must come after their parent."""

    def __init__(self, dimensions: Iterable[Dimension] = ()) -> None:
        self._dims: list[Dimension] = []
        self.add(dimensions)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_parameter_config(cls, entries: Sequence[dict[str, Any]],
                              key: str = "parameter_config") -> "SearchSpace":
        """Build and validate a space from Auptimizer ``parameter_config`` entries.

        Defaults are Auptimizer's (``type`` int, ``range`` [0, 1]); every problem is a one-line
        ``ProposerError("parameter_config[i].<key>: ...")``.
        """
        if not isinstance(entries, (list, tuple)):
            raise ProposerError(f"{key}: expected a list of parameters, got {type(entries).__name__}")
        dims = [_entry_to_dimension(entry, f"{key}[{i}]") for i, entry in enumerate(entries)]
        space = cls()
        for i, dim in enumerate(dims):
            try:
                space.add([dim])
            except ProposerError as exc:
                raise ProposerError(f"{key}[{i}].{str(exc).partition(': ')[2]}") from None
        return space

    def add(self, dimensions: Iterable[Dimension]) -> "SearchSpace":
        """Append dimensions (e.g. the compression section's), checking names and conditions."""
        for dim in dimensions:
            if dim.name in RESERVED_NAMES:
                raise ProposerError(f"{dim.name}: name: {dim.name!r} is reserved for the runner's job config "
                                    f"keys ({', '.join(sorted(RESERVED_NAMES))})")
            if any(d.name == dim.name for d in self._dims):
                raise ProposerError(f"{dim.name}: name: the name {dim.name!r} is used twice")
            if dim.condition is not None:
                self._check_parent(dim)
            self._dims.append(dim)
        return self

    def _check_parent(self, dim: Dimension) -> None:
        parent_name, wanted = dim.condition  # type: ignore[misc]
        parent = next((d for d in self._dims if d.name == parent_name), None)
        if parent is None:
            raise ProposerError(f"{dim.name}: condition: the parent {parent_name!r} must be a parameter "
                                "declared before this one")
        values = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if parent.kind == "choice":
            missing = [v for v in values if v not in parent.choices]  # type: ignore[operator]
            if missing:
                raise ProposerError(f"{dim.name}: condition: {missing[0]!r} is not a choice of {parent_name!r} "
                                    f"({list(parent.choices or ())!r})")

    # ---- views --------------------------------------------------------------------------------
    @property
    def dimensions(self) -> list[Dimension]:
        return list(self._dims)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self._dims]

    def __len__(self) -> int:
        return len(self._dims)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._dims)

    def __getitem__(self, name: str) -> Dimension:
        for dim in self._dims:
            if dim.name == name:
                return dim
        raise KeyError(name)

    def distributions(self) -> dict[str, "optuna.distributions.BaseDistribution"]:
        """Every dimension's optuna distribution (conditional ones included)."""
        return {d.name: d.distribution() for d in self._dims}

    # ---- sampling -----------------------------------------------------------------------------
    def suggest(self, trial: "optuna.trial.BaseTrial") -> dict[str, Any]:
        """Sample the active dimensions through ``trial.suggest_*`` (fixed/enqueued values win)."""
        params: dict[str, Any] = {}
        for dim in self._dims:
            if dim.active(params):
                params[dim.name] = dim.suggest(trial)
        return params

    def active_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The subset of ``params`` that is active under this space's conditions, in space order."""
        out: dict[str, Any] = {}
        for dim in self._dims:
            if dim.name in params and dim.active(out):
                out[dim.name] = params[dim.name]
        return out

    def grid(self) -> list[dict[str, Any]]:
        """All grid points in Auptimizer's odometer order (first dimension varies fastest).

        Conditional dimensions only multiply the points where their parent has the given value.
        """
        bound = math.prod(len(d.grid_values()) for d in self._dims)
        if bound > MAX_GRID_POINTS:
            sizes = " x ".join(f"{d.name}: {len(d.grid_values())}" for d in self._dims)
            raise ProposerError(f"parameter_config: the grid has up to {bound:,} points ({sizes}); "
                                f"use a larger interval or a smaller n (at most {MAX_GRID_POINTS:,} points)")
        points: list[tuple[dict[str, Any], tuple[int, ...]]] = [({}, ())]
        for dim in self._dims:
            values = dim.grid_values()
            expanded = []
            for params, index in points:
                if dim.active(params):
                    expanded += [({**params, dim.name: v}, index + (k,)) for k, v in enumerate(values)]
                else:
                    expanded.append((params, index + (0,)))  # absent counts as one value
            points = expanded
        # Odometer order = lexicographic on the indices read from the last dimension back; with
        # conditions the order is still "first dimension varies fastest" over the present ones.
        points.sort(key=lambda item: item[1][::-1])
        return [params for params, _ in points]

    def grid_size(self) -> int:
        return len(self.grid())


def _condition(value: Any, where: str) -> tuple[str, Any] | None:
    """``[parent, value]`` or ``{parent: value}`` -> ``(parent, value)``."""
    if value is None:
        return None
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value.items()))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (value[0], value[1])
    raise ProposerError(f"{where}.condition: expected [parent name, value] or {{parent name: value}}, got {value!r}")


def _entry_to_dimension(entry: Any, where: str) -> Dimension:
    """One ``parameter_config`` entry -> Dimension, with ``<where>.<key>: ...`` messages."""
    if not isinstance(entry, dict):
        raise ProposerError(f"{where}: expected an object with name/type/range, got {type(entry).__name__}")
    for key in entry:
        if key not in _ENTRY_KEYS:
            extra = did_you_mean(str(key), _ENTRY_KEYS, fallback=f" (known: {', '.join(_ENTRY_KEYS)})")
            raise ProposerError(f"{where}.{key}: unknown key{extra}")
    if "name" not in entry:
        raise ProposerError(f"{where}.name: missing (the key under which the value reaches the job config)")
    kind = entry.get("type", "int")
    kind = kind.lower() if isinstance(kind, str) else kind
    rng = entry.get("range", [0, 1])
    if not isinstance(rng, (list, tuple)):
        raise ProposerError(f"{where}.range: expected a list, got {rng!r}")
    if kind in ("float", "int") and len(rng) != 2:
        raise ProposerError(f"{where}.range: expected [min, max] for a {kind} parameter, got {list(rng)!r}")
    numeric = kind in ("float", "int")
    try:
        return Dimension(
            name=entry["name"], kind=kind,
            low=rng[0] if numeric else None, high=rng[1] if numeric else None,
            choices=tuple(rng) if kind == "choice" else None,
            log=entry.get("log", False), interval=entry.get("interval"), n=entry.get("n"),
            condition=_condition(entry.get("condition"), where),
        )
    except ProposerError as exc:
        # Dimension reports "<name>: <key>: msg"; re-anchor it on the entry's position.
        _, _, rest = str(exc).partition(": ")
        raise ProposerError(f"{where}.{rest}") from None
