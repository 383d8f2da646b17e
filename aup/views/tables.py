"""The terminal views: what ``aup list``, ``show``, ``compare`` and ``pareto`` print.

Each view is built in two steps: a *data* step that returns plain JSON-ready structures (what
``--json`` prints, and what the tests check) and a *render* step that turns the same data into
rich tables. So the terminal and the scripts never disagree about which trials or numbers a view
contains.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

from aup import metrics as M
from aup.views import counts, fmt
from aup.views.pareto import FEASIBLE, VIOLATION, Objective, default_objectives, pareto_front
from aup.views.records import StudyRecord, TrialRow, param_key

# Metrics shown by compare, in this order, when a trial recorded them (the registry's compare ranks).
COMPARE_METRICS = M.ranked("compare")
# Attributes that describe the run of a trial rather than the model: never shown as metrics.
BOOKKEEPING = frozenset({"number", FEASIBLE, VIOLATION, "n_iterations", "runner", "bracket", "rung", "config_id", "state", "attempts", "log_path", "status_reason", "duration_s", "job_config",
                         "job_config_path", "budget", "grid_index", M.MODEL_BYTES_GZIP})
BUDGET = "n_iterations"  # hyperband/bohb budget of the trial (recorded as ``budget``)
RUNNER = "runner"  # host:pid of the runner that ran the trial, in a study shared by several runners
SIDE_BY_SIDE_MAX = 6  # up to this many trials, compare puts them in columns next to each other


# --------------------------------------------------------------------------------------------------
# aup list


def list_data(experiments: Sequence[StudyRecord]) -> list[dict[str, Any]]:
    return [{
        # a WAITING trial is an interrupted trial's configuration queued again (see views/counts.py):
        # counting both read "3/2" after one failure
        "name": e.name, "status": e.status, "trials": e.n_trials - e.counts.get("WAITING", 0),
        "complete": e.counts.get("COMPLETE", 0), "pruned": e.counts.get("PRUNED", 0),
        "failed": e.counts.get("FAIL", 0), "running": e.counts.get("RUNNING", 0), "queued": e.counts.get("WAITING", 0),
        "n_samples": e.n_samples, "objectives": e.objective_directions(),
        "best_trials": e.best_trials, "best_values": e.best_values,
        "started": e.started, "ended": e.ended, "storage": e.storage_url,
    } for e in experiments]


def _best_text(item: dict[str, Any]) -> str:
    names = list(item["objectives"])
    if not item["best_trials"]:
        return "-"
    if len(names) == 1:
        return f"{fmt.value(names[0], item['best_values'][0][0])} (#{item['best_trials'][0]})"
    return f"{len(item['best_trials'])} on front"


def render_list(data: Sequence[dict[str, Any]], storage_url: str) -> Any:
    from aup.safe_text import escape
    from rich.table import Table

    table = Table(title="Experiments", caption=escape(f"storage: {storage_url}"), caption_justify="left")
    for header, justify in (("name", "left"), ("status", "left"), ("trials", "right"), ("done/pruned/failed", "right"),
                            ("best", "right"), ("started", "left"), ("ended", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for item in data:
        trials = str(item["trials"]) + (f"/{item['n_samples']}" if item["n_samples"] else "")
        table.add_row(escape(item["name"]), _status_markup(item["status"]), trials,
                      f"{item['complete']}/{item['pruned']}/{item['failed']}", _best_text(item),
                      item["started"] or "", item["ended"] or "")
    return table


def _status_markup(status: str) -> str:
    colour = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow"}.get(status)
    return f"[{colour}]{status}[/]" if colour else status


# --------------------------------------------------------------------------------------------------
# aup compare (also the body of show's best trials and of pareto)


@dataclass
class Comparison:
    """Selected trials as flat rows plus the columns worth showing for them."""

    rows: list[dict[str, Any]]
    columns: list[str]
    params: list[str]
    front: set[int] = field(default_factory=set)  # trial numbers on the default accuracy/size front

    def data(self) -> list[dict[str, Any]]:
        """JSON rows: the shown columns, their baseline ratios, and whether the trial is on the front."""
        out = []
        for row in self.rows:
            item: dict[str, Any] = {}
            for column in self.columns:
                item[column] = row.get(column)
                if f"{column}_ratio" in row:
                    item[f"{column}_ratio"] = row[f"{column}_ratio"]
            item["on_front"] = row["number"] in self.front
            out.append(item)
        return out


def flat_rows(trials: Sequence[TrialRow]) -> list[dict[str, Any]]:
    return [trial.flat() for trial in trials]


def param_names(trials: Sequence[TrialRow]) -> list[str]:
    """Flat-row keys of the hyperparameters (``param:NAME`` when a metric has the same name)."""
    names: dict[str, None] = {}
    for trial in trials:
        for name in trial.params:
            names[param_key(name, trial.objective_names) if name not in trial.attrs else f"param:{name}"] = None
    return list(names)


def front_numbers(experiment: StudyRecord, rows: Sequence[dict[str, Any]]) -> set[int]:
    """Trial numbers on the experiment's default front (objectives + model size), over completed trials."""
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    objectives = default_objectives(experiment.objective_names, experiment.directions, complete)
    if not complete or not any(all(isinstance(r.get(o.name), (int, float)) for o in objectives) for r in complete):
        return set()
    return {complete[i]["number"] for i in pareto_front(complete, objectives)}


def compare_columns(experiment: StudyRecord, rows: Sequence[dict[str, Any]], params: Sequence[str], *,
                    all_params: bool = False, layers: bool = False) -> list[str]:
    """Columns for a comparison: objectives, recorded metrics, differing params, optional per-layer detail."""
    present = {key for row in rows for key, value in row.items() if value is not None}
    columns = ["number"]
    if len({row["state"] for row in rows}) > 1:
        columns.append("state")
    columns += [name for name in experiment.objective_names if name in present]
    columns += [FEASIBLE] if FEASIBLE in present else []  # the front puts feasible trials first
    columns += [BUDGET] if BUDGET in present else []  # same configuration, other budget: other score
    columns += [m for m in M.ranked("compare") if m in present and m not in columns]
    columns += sorted(k for k in present if _is_extra_metric(k, rows, params) and k not in columns)
    columns += [p for p in params if p in present and (all_params or len(rows) < 2 or _differs(rows, p))]
    columns += [RUNNER] if RUNNER in present else []  # joined runners: which one ran the trial
    if layers:
        columns += [k for k in _ordered_keys(rows) if k.startswith(("sparsity[", "bits["))]
    if _torch_latency_only(rows):  # no deployed runtime was timed: one latency row, not the same twice
        columns.remove(M.LATENCY_MS_TORCH)
    return columns


def _torch_latency_only(rows: Sequence[dict[str, Any]]) -> bool:
    """Every trial's ``latency_ms`` is its torch eager latency (nothing deployed was timed)."""
    timed = [r for r in rows if r.get(M.LATENCY_MS_TORCH) is not None]
    return bool(timed) and all(r.get(M.LATENCY_MS) == r[M.LATENCY_MS_TORCH] for r in timed)


def column_labels(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict[str, str]:
    """Headers that say more than the column name: which runtime a latency was measured in."""
    if M.LATENCY_MS in columns and M.LATENCY_MS_TORCH not in columns and _torch_latency_only(rows):
        return {M.LATENCY_MS: "latency_ms (torch eager)"}
    return {}


def _is_extra_metric(key: str, rows: Sequence[dict[str, Any]], params: Sequence[str]) -> bool:
    """Script metrics beyond the standard ones (e.g. ``f1``), so that any recorded metric can be compared."""
    if key in BOOKKEEPING or key in params or key.startswith((M.BASELINE_PREFIX, "param:")) or key.endswith("_ratio"):
        return False
    if key.startswith(("sparsity[", "bits[")) or M.get(key) is not None:
        return False
    return any(isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool) for row in rows)


def _differs(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return len({repr(row.get(key)) for row in rows}) > 1


def _ordered_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def header(column: str) -> str:
    return "#" if column == "number" else column


def cell(column: str, row: dict[str, Any], params: Sequence[str]) -> str:
    """Cell text, escaped: layer names such as ``sparsity[conv1]`` must not read as rich markup."""
    from aup.safe_text import escape

    if column in params or column.startswith("param:"):
        return escape(fmt.value("", row.get(column)))
    return escape(fmt.cell(column, row))


def render_comparison(comparison: Comparison, *, side_by_side: bool, title: str | None = None,
                      caption: str | None = None) -> Any:
    """Trials as rows (many trials) or as columns next to each other (a few trials)."""
    from aup.safe_text import escape
    from rich.table import Table

    table = Table(title=title and escape(title), caption=caption and escape(caption), caption_justify="left")
    params = comparison.params
    labels = column_labels(comparison.rows, comparison.columns)
    if side_by_side:
        table.add_column("", style="bold", no_wrap=True)
        for row in comparison.rows:
            mark = " *" if row["number"] in comparison.front else ""
            table.add_column(f"trial {row['number']}{mark}", justify="right", no_wrap=True)
        for column in comparison.columns[1:]:
            table.add_row(escape(labels.get(column, column)), *(cell(column, row, params) for row in comparison.rows))
        return table
    for column in comparison.columns:
        table.add_column(escape(labels.get(column, header(column))), justify="left" if column == "state" else "right", no_wrap=True)
    for row in comparison.rows:
        cells = [cell(column, row, params) for column in comparison.columns]
        if row["number"] in comparison.front:
            cells[0] += " *"
        table.add_row(*cells)
    return table


# --------------------------------------------------------------------------------------------------
# aup show


def trial_counts(trials: Sequence[TrialRow]) -> "counts.TrialCounts":
    return counts.count((t.state, t.attrs) for t in trials)


def failure_groups(trials: Sequence[TrialRow]) -> list[dict[str, Any]]:
    """Failed and early-stopped trials grouped by reason, largest group first."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    logs: dict[tuple[str, str], str | None] = {}
    for trial in trials:
        if trial.state in ("FAIL", "PRUNED"):
            key = (trial.state, trial.reason or ("early stopped" if trial.state == "PRUNED" else "no reason recorded"))
            groups[key].append(trial.number)
            if logs.get(key) is None:
                log = trial.attrs.get("log_path")
                logs[key] = str(log) if log else None
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    return [{"state": state, "reason": reason, "count": len(numbers), "trials": numbers, "log": logs.get((state, reason))}
            for (state, reason), numbers in ordered]


def show_data(experiment: StudyRecord, trials: Sequence[TrialRow]) -> dict[str, Any]:
    rows = flat_rows(trials)
    best_rows = [r for r in rows if r["number"] in set(experiment.best_trials)]
    best_rows.sort(key=lambda r: experiment.best_trials.index(r["number"]))
    params = param_names(trials)
    columns = compare_columns(experiment, best_rows, params, all_params=True)
    best = Comparison(best_rows, columns, params, set(experiment.best_trials)).data()
    return {
        "name": experiment.name, "status": experiment.status, "storage": experiment.storage_url,
        "workingdir": experiment.user_attrs.get("workingdir"), "started": experiment.started,
        "ended": experiment.ended, "objectives": experiment.objective_directions(),
        "progress": {"trials": experiment.n_trials, "n_samples": experiment.n_samples,
                     **{state.lower(): n for state, n in sorted(experiment.counts.items())},
                     "counts": trial_counts(trials).as_dict()},
        "best": best, "failures": failure_groups(trials), "config": experiment.config,
        "quant_sensitivity": experiment.user_attrs.get("quant_sensitivity"),
    }


def render_show(data: dict[str, Any], experiment: StudyRecord, trials: Sequence[TrialRow]) -> list[Any]:
    from rich.json import JSON
    from aup.safe_text import escape
    from rich.panel import Panel
    from rich.table import Table

    progress = data["progress"]
    objectives = ", ".join(f"{name} ({d})" for name, d in data["objectives"].items())
    facts = Table.grid(padding=(0, 2))
    for label, text in (("status", _status_markup(data["status"])), ("objectives", objectives),
                        ("progress", escape(counts.describe(trial_counts(trials), progress.get("n_samples")))),
                        ("started", data["started"] or "-"), ("ended", data["ended"] or "-"),
                        ("workingdir", escape(str(data["workingdir"] or "-"))), ("storage", escape(data["storage"]))):
        facts.add_row(f"[bold]{label}[/]", text)
    out: list[Any] = [Panel(facts, title=f"experiment {escape(data['name'])}", expand=False)]
    if data["best"]:
        rows = flat_rows([t for t in trials if t.number in set(experiment.best_trials)])
        rows.sort(key=lambda r: experiment.best_trials.index(r["number"]))
        params = param_names(trials)
        comparison = Comparison(rows, compare_columns(experiment, rows, params, all_params=True), params, set())
        title = "Best trial" if len(experiment.directions) == 1 else "Best trials (Pareto front of the objectives)"
        if rows and rows[0].get(FEASIBLE) is False:  # the front holds feasible trials whenever there is one
            title += ": no trial met the constraints, the least-violating"
        out.append(render_comparison(comparison, side_by_side=len(rows) <= SIDE_BY_SIDE_MAX, title=title))
    else:
        out.append("[yellow]No completed trial yet.[/]")
    if data["failures"]:
        failures = Table(title="Failed and stopped trials by reason")
        for column in ("state", "count", "reason", "trials", "log of the first"):
            failures.add_column(column, justify="right" if column == "count" else "left",
                                overflow="fold" if column == "log of the first" else "ellipsis")
        for group in data["failures"]:
            numbers = ", ".join(map(str, group["trials"][:12])) + (" ..." if len(group["trials"]) > 12 else "")
            failures.add_row(group["state"], str(group["count"]), escape(group["reason"]), numbers,
                             escape(group.get("log") or "-"))
        out.append(failures)
    from aup.views.sensitivity import render_sensitivity

    sensitivity = render_sensitivity(data.get("quant_sensitivity"))
    if sensitivity is not None:
        out.append(sensitivity)
    if data.get("config"):
        out.append(Panel(JSON.from_data(data["config"]), title="experiment config", expand=False))
    return out


# --------------------------------------------------------------------------------------------------
# aup pareto


def pareto_data(rows: Sequence[dict[str, Any]], objectives: Sequence[Objective], params: Sequence[str],
                experiment: StudyRecord) -> Comparison:
    """The non-dominated completed trials for ``objectives``, first objective best first."""
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    chosen = [complete[i] for i in pareto_front(complete, objectives)]
    names = [o.name for o in objectives]
    others = [c for c in compare_columns(experiment, chosen, params) if c not in names and c != "number"]
    return Comparison(chosen, ["number", *names, *others], list(params), {r["number"] for r in chosen})

