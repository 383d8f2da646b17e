"""Experiment ``constraints``: feasibility conditions over a trial's recorded metrics.

::

    "constraints": {
      "score": ">= baseline_score - 0.01",             # at most 1 point below the dense model
      "model_bytes": "<= 0.25 * baseline_model_bytes",  # at most a quarter of the dense size
      "latency_ms": {"max": 2.0},                        # plain limits
      "param_count": 20000                               # a number: upper bound for size metrics
    }

The right-hand side is arithmetic (``+ - * /``, parentheses, numbers) over metric names: any user
attribute of the trial (``score``, the size metrics, ``baseline_*`` reported by the compressor, what
the script logged). A bare number is an upper bound for metrics where lower is better
(their ``aup.metrics`` row's direction is ``min``) and a lower bound otherwise (``score``, ``accuracy``...).

The runner turns each condition into an optuna constraint value (feasible when <= 0) with
``trial.set_constraint`` before telling the study, so TPE / NSGA-II / GP sample towards feasible
trials and ``study.best_trials`` (the Pareto front) keeps only feasible ones. A metric that was not
recorded makes the trial infeasible. Optuna-free and torch-free: the config validator parses them.
"""
from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from typing import Any, Mapping

from aup import metrics as M

INFEASIBLE = 1e18  # constraint value when a metric is missing (finite: samplers do arithmetic on it)
_TINY = 1e-12  # a bound of 0 (e.g. "sparsity >= 0"): the violation is then in the metric's own units
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_CONDITION = re.compile(r"^\s*(<=|>=|<|>)\s*(.+)$")


@dataclass(frozen=True)
class Constraint:
    """``metric <op> expression``; ``op`` is ``<=`` or ``>=`` (strict forms are the same for floats)."""

    key: str  # the constraint's name in optuna (unique per experiment)
    metric: str
    op: str
    expression: ast.expr
    text: str

    def names(self) -> set[str]:
        return {node.id for node in ast.walk(self.expression) if isinstance(node, ast.Name)}

    def bound(self, values: Mapping[str, Any]) -> float | None:
        """The right-hand side for one trial's values (``baseline_score - 0.01`` -> 0.983), None if unknown."""
        try:
            return _evaluate(self.expression, values)
        except (KeyError, ZeroDivisionError, TypeError):
            return None

    def value(self, values: Mapping[str, Any]) -> float:
        """Optuna's constraint value: <= 0 when satisfied, else the violation relative to the bound.

        Relative (``(lhs - rhs) / |rhs|``), so that constraints in different units add up fairly:
        Optuna's constrained domination, the views' Pareto front and the recommended trial all rank
        infeasible trials by the sum of these values, and a raw sum would be decided by the bytes
        alone (40,000 bytes over outweighs any accuracy)."""
        lhs = _number(values.get(self.metric))
        try:
            rhs = _evaluate(self.expression, values)
        except (KeyError, ZeroDivisionError, TypeError):
            return INFEASIBLE
        if lhs is None:
            return INFEASIBLE
        excess = lhs - rhs if self.op == "<=" else rhs - lhs
        return excess / max(abs(rhs), _TINY)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> float:
    if isinstance(node, ast.Constant):
        constant = _number(node.value)
        if constant is not None:
            return constant
    if isinstance(node, ast.Name):
        number = _number(values.get(node.id))
        if number is None:
            raise KeyError(node.id)
        return number
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _evaluate(node.operand, values)
        return -inner if isinstance(node.op, ast.USub) else inner
    raise TypeError(f"unsupported expression {ast.unparse(node)!r}")


def _check_tree(node: ast.expr) -> str | None:
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load)) or type(sub) in _OPS:
            continue
        if isinstance(sub, (ast.USub, ast.UAdd)):
            continue
        if isinstance(sub, ast.Constant) and _number(sub.value) is not None:
            continue
        return f"only numbers, metric names, + - * / and parentheses are allowed, not {ast.unparse(sub)!r}"
    return None


def parse_constraints(raw: Mapping[str, Any]) -> list[Constraint]:
    """The constraints of an experiment; ValueError (``constraints.<metric>: ...``) at the first problem."""
    out = []
    for metric, spec in raw.items():
        where = f"constraints.{metric}"
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in ("min", "max")]
            if unknown or not spec:
                raise ValueError(f"{where}: expected {{\"min\": number, \"max\": number}} (either or both), got {spec!r}")
            for bound, op in (("min", ">="), ("max", "<=")):
                if bound in spec:
                    number = _number(spec[bound])
                    if number is None:
                        raise ValueError(f"{where}.{bound}: expected a number, got {spec[bound]!r}")
                    out.append(_make(f"{metric} {bound}", metric, op, repr(number)))
            continue
        if _number(spec) is not None:
            row = M.get(metric)
            op = "<=" if row is not None and row.direction == "min" else ">="
            out.append(_make(metric, metric, op, repr(float(spec))))
            continue
        if not isinstance(spec, str):
            raise ValueError(f"{where}: expected \"<= expression\", \">= expression\", a number or "
                             f"{{\"min\"/\"max\": number}}, got {spec!r}")
        match = _CONDITION.match(spec)
        if not match:
            raise ValueError(f"{where}: expected a condition starting with <= or >=, e.g. "
                             f"\"<= 0.25 * baseline_{metric}\", got {spec!r}")
        op = "<=" if match.group(1).startswith("<") else ">="
        out.append(_make(metric, metric, op, match.group(2), where))
    return out


def _make(key: str, metric: str, op: str, text: str, where: str | None = None) -> Constraint:
    where = where or f"constraints.{metric}"
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ValueError(f"{where}: cannot read the expression {text.strip()!r}") from None
    problem = _check_tree(tree.body)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return Constraint(key, metric, op, tree.body, f"{metric} {op} {text.strip()}")


def check_constraints(raw: Any) -> list[str]:
    """Problems of a ``constraints`` section, one line each (for the config validator)."""
    if not isinstance(raw, Mapping):
        return [f"constraints: expected an object {{metric: condition}}, got {raw!r}"]
    problems = []
    for metric, spec in raw.items():
        try:
            parse_constraints({metric: spec})
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def constraint_values(constraints: list[Constraint], values: Mapping[str, Any]) -> dict[str, float]:
    """``{constraint key: optuna constraint value}`` for one trial's recorded values."""
    return {c.key: c.value(values) for c in constraints}
