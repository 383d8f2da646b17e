"""Filtering and sorting of flat trial rows (``--where``, ``--sort``, trial selection).

Kept free of rendering so that the tables, the exports and the plots select trials the same way.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from aup.errors import UserError
from aup.views.pareto import default_direction
from aup.numbers import is_number

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
    ">": operator.gt, "<": operator.lt, "~": lambda a, b: str(b).lower() in str(a).lower(),
}
_OP_CHARS = "<>=!~"
_WHERE = re.compile(r"^\s*(?P<field>[^<>=!~]+?)\s*(?P<op>>=|<=|!=|==|=|>|<|~)\s*(?P<value>.*?)\s*$")
_ORDER_OPS = frozenset({">", ">=", "<", "<="})


@dataclass(frozen=True)
class Condition:
    """One ``--where`` clause, e.g. ``score>0.95``, ``compressor=l1_filter``, ``log_path~trial_3``."""

    field: str
    op: str
    value: Any

    def __call__(self, row: Mapping[str, Any]) -> bool:
        have = row.get(self.field)
        if have is None:
            return False
        if self.op == "~":
            return _OPS["~"](have, self.value)
        if isinstance(self.value, float) and is_number(have):
            return _OPS[self.op](float(have), self.value)
        if self.op in ("=", "==", "!="):
            return _OPS[self.op](str(have).lower(), str(self.value).lower())
        return False  # an order comparison between a number and text never holds


def parse_where(text: str) -> Condition:
    """``FIELD OP VALUE``, strictly: one operator, a value that is not another operator, a number
    for ``> >= < <=``. Anything else is a one-line UserError (``score>>0.9`` used to match nothing
    silently)."""
    usage = "expected FIELD OP VALUE with OP one of > >= < <= = != ~ (e.g. 'score>0.95')"
    match = _WHERE.match(text)
    if not match or not match.group("field").strip():
        raise UserError(f"--where {text!r}: {usage}")
    op, raw = match.group("op"), match.group("value")
    if raw == "":
        raise UserError(f"--where {text!r}: no value after {op!r}; {usage}")
    if raw[0] in _OP_CHARS:
        raise UserError(f"--where {text!r}: {op + raw[0]!r} is not an operator; {usage}")
    raw = raw.strip("'\"")
    value: Any
    if op == "~":  # "contains" compares text: runner~16910 must match host:16910 (16910.0 would not)
        return Condition(match.group("field").strip(), op, raw)
    try:
        value = float(raw)
    except ValueError:
        if op in _ORDER_OPS:
            raise UserError(f"--where {text!r}: {op!r} compares numbers, got {raw!r}") from None
        value = raw
    return Condition(match.group("field").strip(), op, value)


def known_fields(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def check_fields(names: Sequence[str], rows: Sequence[Mapping[str, Any]], option: str) -> None:
    """A field that no trial has is a typo: say so, with the closest known names."""
    if not rows:
        return
    from aup.errors import closest

    fields = known_fields(rows)
    for name in names:
        if name not in fields:
            close = closest(name, fields, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" (fields: {', '.join(fields[:25])})"
            raise UserError(f"{option}: no trial has a field {name!r}{hint}")


def filter_rows(rows: Sequence[dict[str, Any]], where: Sequence[str]) -> list[dict[str, Any]]:
    conditions = [parse_where(text) for text in where]
    check_fields([c.field for c in conditions], rows, "--where")
    return [row for row in rows if all(condition(row) for condition in conditions)]


def unknown_values(rows: Sequence[Mapping[str, Any]], where: Sequence[str]) -> list[str]:
    """Why a ``FIELD=TEXT`` condition matches nothing: no trial has that value (``compressor=l1filter``
    when the pruner is ``l1_filter``), with the closest values that do exist."""
    from aup.errors import closest

    notes = []
    for text in where:
        condition = parse_where(text)
        if condition.op not in ("=", "==") or isinstance(condition.value, float):
            continue
        values = sorted({str(r[condition.field]) for r in rows if isinstance(r.get(condition.field), str)})
        if not values or str(condition.value).lower() in {v.lower() for v in values}:
            continue
        close = closest(str(condition.value), values, n=3)
        hint = f"did you mean {', '.join(repr(v) for v in close)}?" if close else f"values: {', '.join(values[:12])}"
        notes.append(f"--where {text!r}: no trial has {condition.field} {condition.value!r}; {hint}")
    return notes


def parse_sort(spec: str, study_directions: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """``FIELD``, ``FIELD:asc|desc`` or ``-FIELD`` -> (field, descending).

    Without an explicit order, metrics sort best first (the study's direction for its objectives,
    smaller first for sizes and latency, larger first for other metrics); other fields ascend.
    """
    spec = spec.strip()
    if spec.startswith("-"):
        return spec[1:], True
    name, _, order = spec.rpartition(":") if spec.rsplit(":", 1)[-1].lower() in ("asc", "desc") else (spec, "", "")
    if order:
        return name, order.lower() == "desc"
    if name in ("number", "state", "duration_s") or name.startswith(("param:",)):
        return name, False
    return name, default_direction(name, study_directions) == "max"


def sort_rows(rows: Sequence[dict[str, Any]], field: str, descending: bool) -> list[dict[str, Any]]:
    """Sort by ``field``; trials without it always go last, ties keep trial order."""
    check_fields([field], rows, "--sort")

    def key(row: dict[str, Any]) -> tuple[int, Any]:
        value = row.get(field)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (2, 0)
        if is_number(value):
            return (0, -value if descending else value)
        return (1, str(value))

    present = sorted(rows, key=key)
    if descending:  # text values: reverse their order but keep missing values last
        texts = [r for r in present if key(r)[0] == 1]
        texts.reverse()
        present = [r for r in present if key(r)[0] == 0] + texts + [r for r in present if key(r)[0] == 2]
    return present


def select_trials(rows: Sequence[dict[str, Any]], numbers: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of the given trial numbers, in the order given; an unknown number is a user error."""
    by_number = {row["number"]: row for row in rows}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        top = max(by_number) if by_number else -1
        raise UserError(f"no trial {', '.join(map(str, missing))} in this experiment (trials are 0..{top})")
    return [by_number[n] for n in numbers]
