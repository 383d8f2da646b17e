"""``aup plot``: accuracy against size with the Pareto front, value over trials, per-parameter views.

The picture answers "which compressed model do I take?" at a glance: every completed trial is a
point at (size, score), the non-dominated trials are joined by the front line and labelled with
their trial numbers, sizes use a log axis (compressions span orders of magnitude) and every axis
names its unit. The same :class:`PlotData` feeds the static PNG (matplotlib) and the interactive
HTML (plotly, with plotly.js embedded so the file opens offline), so both show the same points.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from aup import metrics as M
from aup.caches import aup_cache_dir
from aup.errors import UserError
from aup.views import fmt
from aup.views.pareto import VIOLATION, Objective, default_direction, pareto_front, row_violation
from aup.views.records import StudyRecord, TrialRow

SIZE_CANDIDATES = (M.MODEL_BYTES, M.NONZERO_PARAMS, M.PARAM_COUNT, M.MACS, M.LATENCY_MS)
TRIAL_COLOUR = "#4C72B0"
FRONT_COLOUR = "#D62728"
BEST_COLOUR = "#2CA02C"
MAX_PARAM_PANELS = 4
LABEL_ALL_UP_TO = 40  # with more trials, only the front is labelled (all labels would be unreadable)
PNG_DPI = 100


@dataclass
class PlotData:
    """What every picture of one experiment shows; computed once, drawn by both back ends."""

    title: str
    x: str | None  # None when no size metric was recorded: the trade-off panel is left out
    y: str
    y_direction: str
    points: list[dict[str, Any]]  # completed trials with x and y: number, x, y
    front: list[dict[str, Any]]  # the non-dominated points, in x order
    history: list[dict[str, Any]]  # completed trials in number order: number, value, best
    params: dict[str, list[tuple[Any, float, int]]] = field(default_factory=dict)  # name -> (value, y, number)

    @property
    def log_x(self) -> bool:
        return self.x in fmt.LOG_SCALE and all(p["x"] > 0 for p in self.points)

    def label_numbers(self) -> set[int]:
        if len(self.points) <= LABEL_ALL_UP_TO:
            return {p["number"] for p in self.points}
        return {p["number"] for p in self.front}


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_data(experiment: StudyRecord, trials: Sequence[TrialRow], x: str | None = None,
              y: str | None = None) -> PlotData:
    """Choose the axes and compute the points, the front, the history and the per-parameter views."""
    from aup.views.query import check_fields
    from aup.views.tables import param_names

    rows = [t.flat() for t in trials]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    check_fields([f for f in (x, y) if f], rows, "--x/--y")
    y = y or experiment.objective_names[0]
    y_direction = default_direction(y, experiment.objective_directions())
    if x is None:
        x = next((m for m in SIZE_CANDIDATES if m != y and any(_num(r.get(m)) for r in complete)), None)
    points = [{"number": r["number"], "x": float(r[x]), "y": float(r[y]), "violation": row_violation(r)}
              for r in complete if x and _num(r.get(x)) and _num(r.get(y))]
    front: list[dict[str, Any]] = []
    if x and points:
        objectives = [Objective(y, y_direction), Objective(x, default_direction(x, experiment.objective_directions()))]
        keyed = [{y: p["y"], x: p["x"], "number": p["number"], VIOLATION: p["violation"]} for p in points]
        front = [points[i] for i in pareto_front(keyed, objectives)]
        front.sort(key=lambda p: p["x"])
    history, best = [], None
    for r in complete:
        if _num(r.get(y)):
            value = float(r[y])
            best = value if best is None else (max(best, value) if y_direction == "max" else min(best, value))
            history.append({"number": r["number"], "value": value, "best": best})
    params: dict[str, list[tuple[Any, float, int]]] = {}
    for name in param_names(trials):
        values = [(r.get(name), float(r[y]), r["number"]) for r in complete if r.get(name) is not None and _num(r.get(y))]
        if len({repr(v[0]) for v in values}) > 1:
            params[name] = values
    return PlotData(title=experiment.name, x=x if points else None, y=y, y_direction=y_direction, points=points,
                    front=front, history=history, params=dict(list(params.items())[:MAX_PARAM_PANELS]))


def plot_experiment(experiment: StudyRecord, trials: Sequence[TrialRow], output: Path, *, x: str | None = None,
                    y: str | None = None, label: bool = True) -> Path:
    """Write ``output`` (.png with matplotlib, .html with plotly) and return its path."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise UserError(f"-o {output}: expected a file ending in .png or .html")
    data = plot_data(experiment, trials, x, y)
    if not data.history:
        raise UserError(f"experiment {experiment.name!r} has no completed trial with {data.y!r} to plot yet")
    output.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        figure = matplotlib_figure(data, label=label)
        save_png(figure, output)
    else:
        plotly_figure(data, label=label).write_html(str(output), include_plotlyjs=True, full_html=True)
    return output


# --------------------------------------------------------------------------------------------------
# matplotlib (PNG)


def matplotlib_figure(data: PlotData, *, label: bool = True) -> Any:
    """A figure with the trade-off panel (if any size was recorded), the history and per-parameter panels."""
    if "matplotlib" not in sys.modules:  # its font cache goes under aup's folder, not ~/.cache / ~/.config
        os.environ.setdefault("MPLCONFIGDIR", aup_cache_dir("matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n_params = len(data.params)
    figure = Figure(figsize=(14, 9.5 if n_params else 5.5), layout="constrained")
    grid = figure.add_gridspec(2 if n_params else 1, max(n_params, 2))
    if data.x is not None:
        half = max(n_params, 2) // 2 + (1 if max(n_params, 2) % 2 else 0)
        trade = figure.add_subplot(grid[0, :half])
        _draw_tradeoff(trade, data, label)
        history = figure.add_subplot(grid[0, half:])
    else:
        history = figure.add_subplot(grid[0, :])
    _draw_history(history, data)
    for index, (name, values) in enumerate(data.params.items()):
        _draw_param(figure.add_subplot(grid[1, index]), name, values, data)
    figure.suptitle(f"{data.title}: {len(data.history)} completed trials", fontsize=13)
    return figure


def _draw_tradeoff(ax: Any, data: PlotData, label: bool) -> None:
    ax.scatter([p["x"] for p in data.points], [p["y"] for p in data.points], s=22, c=TRIAL_COLOUR, alpha=0.55,
               label="trial", zorder=2)
    ax.plot([p["x"] for p in data.front], [p["y"] for p in data.front], "-", color=FRONT_COLOUR, lw=1.5, zorder=3)
    ax.scatter([p["x"] for p in data.front], [p["y"] for p in data.front], s=60, c=FRONT_COLOUR,
               edgecolors="black", linewidths=0.6, label=f"Pareto front ({len(data.front)} trials)", zorder=4)
    if label:
        shown = data.label_numbers()
        for p in data.points:
            if p["number"] in shown:
                ax.annotate(str(p["number"]), (p["x"], p["y"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=FRONT_COLOUR if p in data.front else "#333333")
    if data.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(fmt.axis_label(data.x or "") + (" (log scale)" if data.log_x else ""))
    ax.set_ylabel(f"{fmt.axis_label(data.y)} ({'higher' if data.y_direction == 'max' else 'lower'} is better)")
    ax.set_title(f"{data.y} vs {data.x}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _draw_history(ax: Any, data: PlotData) -> None:
    numbers = [h["number"] for h in data.history]
    ax.scatter(numbers, [h["value"] for h in data.history], s=14, c=TRIAL_COLOUR, alpha=0.6, label="trial")
    ax.plot(numbers, [h["best"] for h in data.history], "-", color=BEST_COLOUR, lw=1.8, label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(fmt.axis_label(data.y))
    ax.set_title(f"{data.y} over trials")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)


def _draw_param(ax: Any, name: str, values: list[tuple[Any, float, int]], data: PlotData) -> None:
    front = {p["number"] for p in data.front}
    colours = [FRONT_COLOUR if n in front else TRIAL_COLOUR for _, _, n in values]
    if all(_num(v) for v, _, _ in values):
        xs = [float(v) for v, _, _ in values]
        ax.scatter(xs, [y for _, y, _ in values], s=12, c=colours, alpha=0.6)
        positive = all(v > 0 for v in xs)
        if positive and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
    else:
        categories = sorted({str(v) for v, _, _ in values})
        index = {c: i for i, c in enumerate(categories)}
        jitter = [((n * 0.6180339) % 1 - 0.5) * 0.3 for _, _, n in values]  # deterministic spread
        ax.scatter([index[str(v)] + j for (v, _, _), j in zip(values, jitter)], [y for _, y, _ in values], s=12,
                   c=colours, alpha=0.6)
        ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_xlabel(name)
    ax.set_ylabel(data.y)
    ax.set_title(f"{data.y} by {name}", fontsize=10)
    ax.grid(True, alpha=0.3)


def save_png(figure: Any, path: Path) -> None:
    figure.savefig(path, dpi=PNG_DPI, format="png")


# --------------------------------------------------------------------------------------------------
# plotly (HTML)


def plotly_figure(data: PlotData, *, label: bool = True) -> Any:
    """The same panels as the PNG, interactive: hover shows the trial number and both metrics."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n_params = len(data.params)
    cols = max(n_params, 2)
    top_specs: list[Any] = [{"colspan": cols // 2}] + [None] * (cols // 2 - 1) + [{"colspan": cols - cols // 2}] + \
        [None] * (cols - cols // 2 - 1)
    titles = [f"{data.y} vs {data.x}" if data.x else "", f"{data.y} over trials"] + \
        [f"{data.y} by {name}" for name in data.params]
    rows = 2 if n_params else 1
    specs = [top_specs] + ([[{} for _ in range(cols)]] if n_params else [])
    figure = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=titles, vertical_spacing=0.14)
    if data.x:
        shown = data.label_numbers() if label else set()
        front = {p["number"] for p in data.front}
        figure.add_trace(go.Scatter(
            name="trial", mode="markers+text", x=[p["x"] for p in data.points], y=[p["y"] for p in data.points],
            text=[str(p["number"]) if p["number"] in shown and p["number"] not in front else "" for p in data.points],
            textposition="top right", customdata=[p["number"] for p in data.points],
            hovertemplate=f"trial %{{customdata}}<br>{data.x}=%{{x}}<br>{data.y}=%{{y}}<extra></extra>",
            marker={"color": TRIAL_COLOUR, "opacity": 0.6, "size": 7}), row=1, col=1)
        figure.add_trace(go.Scatter(
            name=f"Pareto front ({len(data.front)} trials)", mode="lines+markers+text",
            x=[p["x"] for p in data.front], y=[p["y"] for p in data.front],
            text=[str(p["number"]) if label else "" for p in data.front], textposition="top right",
            customdata=[p["number"] for p in data.front],
            hovertemplate=f"trial %{{customdata}} (front)<br>{data.x}=%{{x}}<br>{data.y}=%{{y}}<extra></extra>",
            marker={"color": FRONT_COLOUR, "size": 10, "line": {"color": "black", "width": 1}},
            line={"color": FRONT_COLOUR}), row=1, col=1)
        figure.update_xaxes(title_text=fmt.axis_label(data.x), type="log" if data.log_x else "linear", row=1, col=1)
        figure.update_yaxes(title_text=fmt.axis_label(data.y), row=1, col=1)
    history_col = 1 + cols // 2 if data.x else 1
    figure.add_trace(go.Scatter(name="trial value", mode="markers", x=[h["number"] for h in data.history],
                                y=[h["value"] for h in data.history], marker={"color": TRIAL_COLOUR, "size": 5},
                                showlegend=False), row=1, col=history_col)
    figure.add_trace(go.Scatter(name="best so far", mode="lines", x=[h["number"] for h in data.history],
                                y=[h["best"] for h in data.history], line={"color": BEST_COLOUR}),
                     row=1, col=history_col)
    figure.update_xaxes(title_text="trial number", row=1, col=history_col)
    figure.update_yaxes(title_text=fmt.axis_label(data.y), row=1, col=history_col)
    for index, (name, values) in enumerate(data.params.items()):
        figure.add_trace(go.Scatter(
            name=name, mode="markers", x=[v for v, _, _ in values], y=[y for _, y, _ in values],
            customdata=[n for _, _, n in values], showlegend=False, marker={"color": TRIAL_COLOUR, "size": 5},
            hovertemplate=f"trial %{{customdata}}<br>{name}=%{{x}}<br>{data.y}=%{{y}}<extra></extra>"),
            row=2, col=index + 1)
        figure.update_xaxes(title_text=name, row=2, col=index + 1)
    figure.update_layout(title=f"{data.title}: {len(data.history)} completed trials", height=900 if n_params else 520,
                         template="plotly_white", legend={"orientation": "h", "y": -0.08})
    return figure
