"""What counts as a number in user input, metrics and results: one rule for every module.

``True`` is an ``int`` to Python but never a sparsity, a score or a bound to a user, so booleans are
not numbers here; NaN and infinities are numbers but not finite ones (a metric that is NaN is
"not measured", never "smaller than everything").
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any


def is_number(value: Any) -> bool:
    """A real number that is not a bool (NaN and infinities included)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number that is not a bool, NaN or an infinity."""
    return is_number(value) and math.isfinite(value)
