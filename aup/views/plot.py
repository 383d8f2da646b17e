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
from aup.numbers import is_finite_number as _num
from aup.views import fmt
from aup.views.pareto import VIOLATION, Objective, default_direction, pareto_front, row_violation
from aup.views.records import StudyRecord, TrialRow

TRIAL_COLOUR = "#4C72B0"
FRONT_COLOUR = "#D62728"
BEST_COLOUR = "#2CA02C"
BASELINE_COLOUR = "#7F7F7F"
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
    # the uncompressed model as the compressor measured it (``baseline_<x>``, ``baseline_<y>``): how much
    # accuracy a compressed trial gave up, and how much smaller it is
    baseline: dict[str, float] = field(default_factory=dict)  # "x" and/or "y"
    log_params: frozenset[str] = frozenset()  # hyperparameters searched on a log scale (``"log": true``)

    @property
    def log_x(self) -> bool:
        return fmt.log_scale(self.x or "") and all(p["x"] > 0 for p in self.points)

    @property
    def infeasible(self) -> list[dict[str, Any]]:
        """Points that violate the experiment's constraints (drawn hollow: the front prefers feasible ones)."""
        return [p for p in self.points if p.get("violation", 0.0) > 0]

    def label_numbers(self) -> set[int]:
        if len(self.points) <= LABEL_ALL_UP_TO:
            return {p["number"] for p in self.points}
        return {p["number"] for p in self.front}


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
        x = next((m for m in M.ranked("size_axis") if m != y and any(_num(r.get(m)) for r in complete)), None)
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
                    front=front, history=history, params=dict(list(params.items())[:MAX_PARAM_PANELS]),
                    baseline=_baseline(complete, x if points else None, y), log_params=_log_params(experiment))


def _baseline(rows: Sequence[dict[str, Any]], x: str | None, y: str) -> dict[str, float]:
    """The dense model's x and y, from the first trial that recorded ``baseline_<metric>``."""
    found: dict[str, float] = {}
    for axis, name in (("x", x), ("y", y)):
        values = [r.get(M.BASELINE_PREFIX + name) for r in rows] if name else []
        value = next((float(v) for v in values if _num(v)), None)
        if value is not None:
            found[axis] = value
    return found


def _log_params(experiment: StudyRecord) -> frozenset[str]:
    """Names of the ``parameter_config`` entries searched with ``"log": true``."""
    entries = experiment.config.get("parameter_config")
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(str(e["name"]) for e in entries if isinstance(e, dict) and e.get("log") and "name" in e)


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
    """A figure with the trade-off panel (if any size was recorded), the history and per-parameter panels.

    One legend below the panels names every colour and marker (trial, Pareto front, infeasible,
    dense model); sizes read in their unit (kB, k parameters) with a tick at 1-2-5 or every step of
    the log axis; labels of the trade-off panel are placed where they overlap no other label.
    """
    if "matplotlib" not in sys.modules:  # its font cache goes under aup's folder, not ~/.cache / ~/.config
        os.environ.setdefault("MPLCONFIGDIR", aup_cache_dir("matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n_params = len(data.params)
    figure = Figure(figsize=(14, 10 if n_params else 6), layout="constrained")
    grid = figure.add_gridspec(2 if n_params else 1, max(n_params, 2))
    trade = None
    if data.x is not None:
        half = max(n_params, 2) // 2 + (1 if max(n_params, 2) % 2 else 0)
        trade = figure.add_subplot(grid[0, :half])
        _draw_tradeoff(trade, data)
        history = figure.add_subplot(grid[0, half:])
    else:
        history = figure.add_subplot(grid[0, :])
    _draw_history(history, data)
    for index, (name, values) in enumerate(data.params.items()):
        _draw_param(figure.add_subplot(grid[1, index]), name, values, data)
    figure.suptitle(f"{data.title}: {len(data.history)} completed trials", fontsize=13)
    handles, labels = _legend_entries(figure)
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9, frameon=False)
    if trade is not None and label:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(figure).draw()  # final layout: label placement works in display coordinates
        _label_points(trade, data)
    return figure


def _front_label(data: PlotData) -> str:
    n = len(data.front)
    return f"Pareto front ({n} trial{'s' if n != 1 else ''})"


def _legend_entries(figure: Any) -> tuple[list[Any], list[str]]:
    """Every artist with a label, once per label, in drawing order."""
    seen: dict[str, Any] = {}
    for ax in figure.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(text, handle)
    return list(seen.values()), list(seen)


def _draw_tradeoff(ax: Any, data: PlotData) -> None:
    infeasible = data.infeasible
    feasible = [p for p in data.points if p not in infeasible]
    ax.scatter([p["x"] for p in feasible], [p["y"] for p in feasible], s=26, c=TRIAL_COLOUR, alpha=0.6,
               label="trial", zorder=2)
    if infeasible:
        ax.scatter([p["x"] for p in infeasible], [p["y"] for p in infeasible], s=30, facecolors="none",
                   edgecolors=TRIAL_COLOUR, linewidths=1.2, label="infeasible trial (constraint violated)", zorder=2)
    ax.plot([p["x"] for p in data.front], [p["y"] for p in data.front], "-", color=FRONT_COLOUR, lw=1.5, zorder=3)
    ax.scatter([p["x"] for p in data.front], [p["y"] for p in data.front], s=64, c=FRONT_COLOUR,
               edgecolors="black", linewidths=0.6, label=_front_label(data), zorder=4)
    _draw_baseline(ax, data, point=True)
    if data.log_x:
        ax.set_xscale("log")
        _size_ticks(ax.xaxis, data.x or "", [p["x"] for p in data.points] + [data.baseline.get("x", math.nan)])
    elif fmt.log_scale(data.x or ""):
        _size_ticks(ax.xaxis, data.x or "", [])
    ax.set_xlabel(_size_label(data.x or "", data.log_x))
    ax.set_ylabel(f"{fmt.axis_label(data.y)} ({'higher' if data.y_direction == 'max' else 'lower'} is better)")
    ax.set_title(f"{data.y} vs {data.x}")
    ax.grid(True, which="major", alpha=0.3)
    ax.margins(x=0.08, y=0.1)


def _draw_baseline(ax: Any, data: PlotData, *, point: bool = False) -> None:
    """The dense model: a dashed line at its score (what compression gave up) and, on the trade-off
    panel, a star at its size and score."""
    if "y" not in data.baseline:
        return
    dense_y = fmt.value(data.y, data.baseline["y"])
    ax.axhline(data.baseline["y"], color=BASELINE_COLOUR, ls="--", lw=1.2, zorder=1,
               label=f"dense model's {data.y} ({dense_y})")
    if point and "x" in data.baseline:
        ax.scatter([data.baseline["x"]], [data.baseline["y"]], marker="*", s=220, c=BASELINE_COLOUR,
                   edgecolors="black", linewidths=0.6, zorder=5,
                   label=f"dense model ({fmt.value(data.x or '', data.baseline['x'])}, {dense_y})")


def _size_label(name: str, log: bool) -> str:
    """``model size (log scale)``: the unit is in every tick label (``60 kB``)."""
    if fmt.log_scale(name):
        return f"{M.label(name)}{' (log scale)' if log else ''}"
    return fmt.axis_label(name) + (" (log scale)" if log else "")


def _size_ticks(axis: Any, name: str, values: list[float]) -> None:
    """Ticks a reader can read on a size axis: ``40 kB 60 kB 100 kB``, several per decade on a log axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt.value(name, v)))
    finite = [v for v in values if _num(v) and v > 0]
    if not finite:
        return
    decades = math.log10(max(finite) / min(finite)) if len(finite) > 1 else 0.0
    subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_minor_formatter(NullFormatter())


def _label_points(ax: Any, data: PlotData) -> None:
    """Trial numbers next to their points, each at the first of a few offsets where its box overlaps
    no label already placed and no other point (``3`` next to ``11`` must not read ``311``)."""
    shown = data.label_numbers()
    front = {p["number"] for p in data.front}
    renderer = ax.figure.canvas.get_renderer()
    to_pixels = ax.transData.transform
    points = [to_pixels((p["x"], p["y"])) for p in data.points]
    placed: list[Any] = []
    offsets = [(5, 4), (5, -11), (-11, 4), (-11, -11), (8, -3), (-14, -3), (0, 9), (0, -15), (12, 10), (-18, 10)]
    order = sorted(data.points, key=lambda p: (p["number"] not in front, p["number"]))  # the front first
    for point in order:
        if point["number"] not in shown:
            continue
        colour = FRONT_COLOUR if point["number"] in front else "#222222"
        text = None
        for dx, dy in offsets:
            if text is not None:
                text.remove()
            text = ax.annotate(str(point["number"]), (point["x"], point["y"]), textcoords="offset points",
                               xytext=(dx, dy), fontsize=8, color=colour, zorder=6,
                               fontweight="bold" if point["number"] in front else "normal")
            box = text.get_window_extent(renderer).expanded(1.15, 1.2)
            if not any(box.overlaps(other) for other in placed) and not any(
                    box.contains(px, py) for px, py in points):
                break
        placed.append(text.get_window_extent(renderer).expanded(1.15, 1.2))


def _draw_history(ax: Any, data: PlotData) -> None:
    numbers = [h["number"] for h in data.history]
    ax.scatter(numbers, [h["value"] for h in data.history], s=16, c=TRIAL_COLOUR, alpha=0.6, label="trial")
    ax.plot(numbers, [h["best"] for h in data.history], "-", color=BEST_COLOUR, lw=1.8, label="best so far")
    _draw_baseline(ax, data)
    ax.set_xlabel("trial number")
    ax.set_ylabel(fmt.axis_label(data.y))
    ax.set_title(f"{data.y} over trials")
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.08)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _draw_param(ax: Any, name: str, values: list[tuple[Any, float, int]], data: PlotData) -> None:
    front = {p["number"] for p in data.front}
    on = [v for v in values if v[2] in front]
    off = [v for v in values if v[2] not in front]
    numeric = all(_num(v) for v, _, _ in values)
    categories = sorted({str(v) for v, _, _ in values})
    index = {c: i for i, c in enumerate(categories)}

    def xs(group: list[tuple[Any, float, int]]) -> list[float]:
        if numeric:
            return [float(v) for v, _, _ in group]
        return [index[str(v)] + ((n * 0.6180339) % 1 - 0.5) * 0.3 for v, _, n in group]  # deterministic spread

    hollow = {p["number"] for p in data.infeasible}
    bad = [v for v in off if v[2] in hollow]
    off = [v for v in off if v[2] not in hollow]
    ax.scatter(xs(off), [y for _, y, _ in off], s=14, c=TRIAL_COLOUR, alpha=0.6, label="trial")
    if bad:
        ax.scatter(xs(bad), [y for _, y, _ in bad], s=16, facecolors="none", edgecolors=TRIAL_COLOUR,
                   linewidths=1.0, label="infeasible trial (constraint violated)")
    ax.scatter(xs(on), [y for _, y, _ in on], s=22, c=FRONT_COLOUR, edgecolors="black", linewidths=0.4,
               label=_front_label(data))
    _draw_baseline(ax, data)
    if numeric:
        positive = all(float(v) > 0 for v, _, _ in values)
        if positive and (name in data.log_params or max(xs(values)) / min(xs(values)) >= 100):
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis, xs(values))
            name_label = f"{name} (log scale)"
        else:
            name_label = name
    else:
        ax.set_xticks(range(len(categories)), categories, rotation=20)
        name_label = name
    ax.set_xlabel(name_label)
    ax.set_ylabel(data.y)
    ax.set_title(f"{data.y} by {name}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(y=0.08)


def _plain_log_ticks(axis: Any, values: list[float]) -> None:
    """A log axis of a hyperparameter with plain labels (0.002 0.005 0.01), not 2x10^-3 on every minor tick."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(values) / min(values)) if min(values) > 0 else 0.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


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
            name=_front_label(data), mode="lines+markers+text",
            x=[p["x"] for p in data.front], y=[p["y"] for p in data.front],
            text=[str(p["number"]) if label else "" for p in data.front], textposition="top right",
            customdata=[p["number"] for p in data.front],
            hovertemplate=f"trial %{{customdata}} (front)<br>{data.x}=%{{x}}<br>{data.y}=%{{y}}<extra></extra>",
            marker={"color": FRONT_COLOUR, "size": 10, "line": {"color": "black", "width": 1}},
            line={"color": FRONT_COLOUR}), row=1, col=1)
        if "y" in data.baseline and "x" in data.baseline:
            figure.add_trace(go.Scatter(
                name=f"dense model ({fmt.value(data.x, data.baseline['x'])}, {fmt.value(data.y, data.baseline['y'])})",
                mode="markers", x=[data.baseline["x"]], y=[data.baseline["y"]],
                marker={"color": BASELINE_COLOUR, "size": 16, "symbol": "star", "line": {"color": "black", "width": 1}}),
                row=1, col=1)
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
        log = name in data.log_params and all(_num(v) and v > 0 for v, _, _ in values)
        figure.update_xaxes(title_text=name + (" (log scale)" if log else ""), type="log" if log else None,
                            row=2, col=index + 1)
    if "y" in data.baseline:  # the dense model's score on every panel that shows the score
        panels = ([(1, 1)] if data.x else []) + [(1, history_col)] + [(2, i + 1) for i in range(n_params)]
        for row, col in panels:
            figure.add_hline(y=data.baseline["y"], line_dash="dash", line_color=BASELINE_COLOUR, row=row, col=col)
    figure.update_layout(title=f"{data.title}: {len(data.history)} completed trials", height=900 if n_params else 520,
                         template="plotly_white", legend={"orientation": "h", "y": -0.08})
    return figure
