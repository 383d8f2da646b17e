"""What counts as a number in user input, metrics and results: one rule for every module.

``True`` is an ``int`` to Python but never a sparsity, a score or a bound to a user, so booleans are
not numbers here; NaN and infinities are numbers but not finite ones (a metric that is NaN is
"not measured", never "smaller than everything").
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, TypeGuard


def is_number(value: Any) -> bool:
    """A real number that is not a bool (NaN and infinities included)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> TypeGuard[float]:
    """A real number that is not a bool, NaN or an infinity."""
    return is_number(value) and math.isfinite(value)


def finite_or_none(value: Any) -> Any:
    """``value`` unless it is a NaN or infinite float, which becomes None ("not measured")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_safe(data: Any) -> Any:
    """``data`` with every non-finite float (at any depth) replaced by None: NaN is not JSON."""
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return finite_or_none(data)
