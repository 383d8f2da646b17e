"""What the user sees while an experiment runs and when it ends.

On a terminal: a rich ``Live`` panel (trials done / running / failed / pruned, the best value so
far, the last event). Elsewhere (CI logs, pipes): one plain line per finished trial, because a live
display would fill a log with redraws. At the end: a table of the best trials and where the
results are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aup import metrics as M
from aup.safe_text import escape, output_console, printable, shell_command, shown_url

if TYPE_CHECKING:
    import optuna


@dataclass
class Counts:
    done: int = 0
    running: int = 0
    failed: int = 0
    pruned: int = 0
    total: int | None = None
    best: float | None = None
    best_trial: int | None = None
    last_event: str = ""


def number(value: Any) -> str:
    """One format for every number the runner prints (progress lines and the summary table).

    Whole numbers and anything from 10,000 up are grouped integers (``91,599`` and ``121,040``,
    never ``1.2104e+05`` next to ``91599``); smaller values keep 6 significant digits; only values
    below 0.001 use an exponent. Text and other objects print as they are.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if float(value).is_integer() or abs(value) >= 1e4:
        return f"{round(value):,}"
    if abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.6g}"


_fmt = number


def format_params(params: dict[str, Any], limit: int = 80) -> str:
    text = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Progress:
    """Live display on a TTY, plain lines otherwise; ``live=False`` forces plain lines."""

    def __init__(self, name: str, *, console: Console | None = None, live: bool | None = None,
                 total: int | None = None, maximize: bool = True, multi_objective: bool = False) -> None:
        self.console = console or output_console()
        self.name = name
        self.maximize = maximize
        self.multi_objective = multi_objective
        self.counts = Counts(total=total)
        use_live = self.console.is_terminal if live is None else live
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False) if use_live else None

    def __enter__(self) -> "Progress":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def note_best(self, number: int, value: float) -> None:
        best = self.counts.best
        if best is None or (value > best if self.maximize else value < best):
            self.counts.best, self.counts.best_trial = value, number

    def count_existing(self, trials: Sequence[Any], interrupted_attr: str) -> None:
        """On resume, the counters start from what the study already holds (interrupted trials run again)."""
        counts = self.counts
        for trial in trials:
            state = trial.state.name
            if state == "COMPLETE":
                counts.done += 1
                if not self.multi_objective and trial.value is not None:
                    self.note_best(trial.number, trial.value)
            elif state == "PRUNED":
                counts.pruned += 1
            elif state == "FAIL" and not trial.user_attrs.get(interrupted_attr):
                counts.failed += 1

    def set_running(self, running: int) -> None:
        """How many trial processes run right now (the runner knows; finished ones may not be recorded yet)."""
        self.counts.running = running

    def retrying(self, number: int, attempt: int, reason: str) -> None:
        self._event(f"trial {number} attempt {attempt} failed ({reason}); retrying")

    def finished(self, number: int, state: str, value: Any, params: dict[str, Any], reason: str | None) -> None:
        counts = self.counts
        if state == "COMPLETE":
            counts.done += 1
            if not self.multi_objective and isinstance(value, (int, float)):
                self.note_best(number, float(value))
            shown = _fmt(value) if not isinstance(value, list) else ", ".join(_fmt(v) for v in value)
            self._event(f"trial {number} done: {shown}" + (f"  ({format_params(params)})" if params else ""))
        elif state == "PRUNED":
            counts.pruned += 1
            self._event(f"trial {number} pruned: {reason}")
        else:
            counts.failed += 1
            self._event(f"trial {number} failed: {reason}")

    def message(self, text: str) -> None:
        text = printable(text)
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def _event(self, text: str) -> None:
        text = printable(text)
        self.counts.last_event = text
        if self._live is None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __rich__(self) -> Any:
        c = self.counts
        table = Table.grid(padding=(0, 2))
        total = f"/{c.total}" if c.total else ""
        table.add_row(
            Text(printable(self.name), style="bold"),
            Text(f"done {c.done}{total}", style="green"),
            Text(f"running {c.running}", style="cyan"),
            Text(f"failed {c.failed}", style="red" if c.failed else "dim"),
            Text(f"pruned {c.pruned}", style="yellow" if c.pruned else "dim"),
            Text(f"best {_fmt(c.best)} (trial {c.best_trial})" if c.best is not None else "best -"),
        )
        return Group(table, Text(c.last_event, style="dim", overflow="ellipsis", no_wrap=True))


FAILED_SHOWN = 3


def failure_lines(trials: Sequence[Any], limit: int = FAILED_SHOWN) -> list[str]:
    """``trial 3 failed: <reason>; log: jobs/x-3.out`` for the first failed trials (interrupted ones aside)."""
    failed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("interrupted")]
    lines = []
    for trial in failed[:limit]:
        reason = trial.user_attrs.get("status_reason") or "no reason recorded"
        log = trial.user_attrs.get("log_path")
        lines.append(f"trial {trial.number} failed: {reason}" + (f"; log: {log}" if log else ""))
    if len(failed) > limit:
        lines.append(f"... and {len(failed) - limit} more failed trials (aup show lists them by reason)")
    return lines


# Size metrics shown next to the objectives in the end-of-run table, when the trials recorded them.
SUMMARY_METRICS = M.ranked("summary")


_fmt_metric = number


def print_summary(console: Console, *, study_name: str, status: str, trials: Sequence[Any],
                  objectives: Sequence[str], storage_url: str, best: Sequence[Any], extra: Sequence[str] = (),
                  limit: int = 5, planned: int | None = None) -> None:
    """The end-of-run table of the best trials (the Pareto front for several objectives) with their
    recorded size metrics, the state counts, and where the results are."""
    from aup.views import counts as trial_counts

    counted = trial_counts.count((t.state.name, t.user_attrs) for t in trials)
    text = trial_counts.describe(counted, planned)
    console.print(f"[bold]{escape(study_name)}[/bold]: {escape(status)} ({escape(text)})", highlight=False)
    if best:
        pareto = len(objectives) > 1
        shown = list(best)[: max(limit, 10) if pareto else limit]
        metrics = [m for m in M.ranked("summary")
                   if m not in objectives and any(m in t.user_attrs for t in shown)]
        title = "Pareto front" if pareto else ("best trials" if len(best) > 1 else "best trial")
        if any(t.user_attrs.get("feasible") is False for t in shown[:1]):
            title += " (no trial met the constraints: the least-violating trials)"
        table = Table(title=title, title_justify="left")
        table.add_column("trial", justify="right")
        constrained = any("feasible" in t.user_attrs for t in shown)
        for name in [*objectives, *metrics, *(["feasible"] if constrained else [])]:
            table.add_column(escape(name), justify="right")
        table.add_column("hyperparameters", ratio=1, overflow="fold")
        for trial in shown:
            values = [escape(_fmt_metric(v)) for v in (trial.values or [])]
            extras = [escape(_fmt_metric(trial.user_attrs.get(m, "-"))) for m in metrics]
            feasible = [_yes_no(trial.user_attrs.get("feasible"))] if constrained else []
            table.add_row(str(trial.number), *values, *extras, *feasible, escape(format_params(trial.params, 100)))
        console.print(table)
    for line in failure_lines(trials):
        console.print(printable(line), highlight=False, markup=False, soft_wrap=True)
    for line in extra:
        console.print(printable(line), highlight=False, markup=False, soft_wrap=True)
    see = shell_command("aup", "show", study_name)
    console.print(printable(f"results: {shown_url(storage_url)}  (see: {see})"), highlight=False, markup=False,
                  soft_wrap=True)


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def best_trials(study: "optuna.Study", single: bool) -> list[Any]:
    """Complete trials best first (one objective), or the Pareto front (several); feasible first.

    The front is the views' front (aup.views.pareto.frozen_front): with constraints and no feasible
    trial it is the least-violating trials, where Optuna's ``best_trials`` would be empty.
    """
    from optuna.trial import TrialState

    from aup.views.pareto import frozen_front, violation

    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return []
    if single:
        sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
        return sorted(complete, key=lambda t: (violation(t.constraints), sign * t.value, t.number))
    return frozen_front(complete, study.directions)
